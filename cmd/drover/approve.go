package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
)

// approvalCmds are `drover workers approve` and `drover workers reject`:
// an admin's verdict on a worker that enrolled while the master requires
// approval (drover.master(approve_workers = True)).
func approvalCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{
		approvalCmd(g, "approve", "Let a worker awaiting approval connect (needs an admin token)",
			`Approve a worker that enrolled while the master requires approval
(drover.master(approve_workers = True)), or one rejected before. The worker
keeps retrying its connection while it waits, and is let in at its next
attempt, within its backoff (at most a minute).`,
			(*api.Client).ApproveWorker),
		approvalCmd(g, "reject", "Refuse a worker for good (needs an admin token)",
			`Reject a worker: its connections are refused and it stops retrying. A
connected worker is disconnected at once; its running build is retried on
another worker. Approve it later to let it back in.`,
			(*api.Client).RejectWorker),
	}
}

func approvalCmd(g *globals, verb, short, long string, call func(*api.Client, context.Context, string) (*drover.Worker, error)) *cobra.Command {
	var cf clientFlags
	c := &cobra.Command{
		Use:   verb + " WORKER",
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w, err := call(cf.client(), cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "worker %s: %s\n", w.Name, w.Approval)
			return nil
		},
	}
	cf.add(c)
	return c
}
