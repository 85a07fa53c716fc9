package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
)

func whyCmd(g *globals) *cobra.Command {
	var cf clientFlags
	c := &cobra.Command{
		Use:   "why BUILDER [WORKER]",
		Short: "Explain which workers may run a builder, and why or why not",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			el, err := cf.client().Eligibility(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			shown := 0
			for _, e := range el {
				if len(args) == 2 && e.Worker != args[1] {
					continue
				}
				shown++
				verdict := "eligible"
				if !e.Eligible {
					verdict = "NOT eligible"
				}
				fmt.Fprintf(g.stdout, "%s: %s for %s\n", e.Worker, verdict, args[0])
				for _, r := range e.Reasons {
					fmt.Fprintf(g.stdout, "  - %s\n", r)
				}
			}
			switch {
			case len(args) == 2 && shown == 0:
				return drover.Errorf(drover.NotFound, "no worker named %q has ever connected", args[1])
			case shown == 0:
				fmt.Fprintln(g.stdout, "no worker has connected yet")
			}
			return nil
		},
	}
	cf.add(c)
	return c
}
