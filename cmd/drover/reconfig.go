package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
)

// reconfigHashLen is how much of the config hash reconfig prints: the
// same prefix the web UI's admin page shows, so the two can be compared.
const reconfigHashLen = 12

// reconfigCmd is `drover reconfig`: the master reloads its config file,
// and the exit status says whether the new config took over, so that a
// deploy script can stop on a refused one.
func reconfigCmd(g *globals) *cobra.Command {
	var cf clientFlags
	c := &cobra.Command{
		Use:   "reconfig",
		Short: "Make the master reload its config file (needs an admin token); exit 1 if refused",
		Long: `Make the master load its config file again, with the loader checkconfig
uses. Running builds are never interrupted and queued requests stay queued
(those of removed builders are cancelled with a reason).

A config that fails to load is refused: the master keeps the one in force,
the admin page shows the error, and reconfig prints the file:line errors
and exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := cf.client().Reload(cmd.Context())
			if drover.KindOf(err) == drover.Invalid {
				// The master's message starts with its own "config refused: ",
				// which the line above says better.
				msg := strings.TrimPrefix(err.Error(), drover.Invalid.String()+": ")
				msg = strings.TrimPrefix(msg, "config refused: ")
				return exitError{code: 1, msg: "drover: the master refused the config and keeps the one in force:\n" + msg}
			}
			if err != nil {
				return fmt.Errorf("reload config: %w", err)
			}
			hash := st.Hash
			if len(hash) > reconfigHashLen {
				hash = hash[:reconfigHashLen] + "…"
			}
			noun := "builders"
			if st.Builders == 1 {
				noun = "builder"
			}
			fmt.Fprintf(g.stdout, "config reloaded: hash %s, %d %s\n", hash, st.Builders, noun)
			return nil
		},
	}
	cf.add(c)
	return c
}
