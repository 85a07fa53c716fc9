package main

import (
	"github.com/spf13/cobra"

	"github.com/drover-ci/drover/internal/agent"
)

// superviseCmd is `drover __supervise DIR/run/<command-id>`: the worker
// starts one per command so that the command, its output and its exit
// status outlive the worker process. Not for people, hence hidden; it
// reads everything it needs from the directory, nothing from the worker.
func superviseCmd(_ *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "__supervise DIR",
		Short:  "Run one worker command under supervision (internal)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return agent.Supervise(cmd.Context(), args[0])
		},
	}
}
