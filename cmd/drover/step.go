package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/agent"
)

// stepCmd is `drover step …`: what a build's command tells its step while
// it runs, through the worker's control socket named in its environment.
func stepCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "step",
		Short: "From inside a build's command: publish links and properties of the running step, upload artifacts",
		Long: `From inside a build's command: publish links and properties of the running step.

These commands talk to the worker running the build, through the control
socket it names in the command's environment ($` + agent.EnvControl + ` and
$` + agent.EnvCommandID + `). Outside a build they fail.`,
	}
	c.AddCommand(
		&cobra.Command{
			Use:   "url NAME URL",
			Short: "Show a link (a coverage report, say) on the step, in the web UI and the API",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				return publishStep(cmd, agent.StepURL, args[0], args[1])
			},
		},
		&cobra.Command{
			Use:   "property KEY VALUE",
			Short: "Set a build property, which later steps interpolate as %(prop:KEY)s",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				return publishStep(cmd, agent.StepProperty, args[0], args[1])
			},
		},
		stepUploadCmd(),
	)
	return c
}

// stepEnv returns the control socket and command id of the build's
// command this process runs in.
func stepEnv() (socket, id string, err error) {
	socket, id = os.Getenv(agent.EnvControl), os.Getenv(agent.EnvCommandID)
	if socket == "" || id == "" {
		return "", "", drover.Errorf(drover.Invalid, "not inside a build: $%s and $%s are not set (drover step runs from a build step's command)", agent.EnvControl, agent.EnvCommandID)
	}
	return socket, id, nil
}

func publishStep(cmd *cobra.Command, kind, name, value string) error {
	socket, id, err := stepEnv()
	if err != nil {
		return err
	}
	if kind == agent.StepURL {
		err = drover.CheckStepURL(name, value)
	} else {
		err = drover.CheckStepProperty(name, value)
	}
	if err != nil {
		return err
	}
	if err := agent.PublishStep(cmd.Context(), socket, agent.StepRequest{CommandID: id, Kind: kind, Name: name, Value: value}); err != nil {
		return fmt.Errorf("step %s %s: %w", kind, name, err)
	}
	return nil
}

func stepUploadCmd() *cobra.Command {
	var dest string
	c := &cobra.Command{
		Use:   "upload PATH",
		Short: "Upload a file or directory of the build as an artifact of the build",
		Long: `Upload a file or directory of the build as an artifact of the build.

PATH must be inside the builder's directory on the worker. The command waits
until the master holds every file (the worker resumes across reconnects).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			socket, id, err := stepEnv()
			if err != nil {
				return err
			}
			// Absolute, so that it means what it means here: the command
			// may have changed directory since it started.
			path, err := filepath.Abs(args[0])
			if err != nil {
				return drover.Errorf(drover.Invalid, "upload %s: %v", args[0], err)
			}
			if err := agent.UploadFromCommand(cmd.Context(), socket, agent.UploadRequest{CommandID: id, Path: path, Dest: dest}); err != nil {
				return fmt.Errorf("step upload %s: %w", args[0], err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dest, "dest", "", "artifact path to upload under (default: PATH's base name)")
	return c
}
