//go:build (darwin && (amd64 || arm64)) || (freebsd && (386 || amd64 || arm || arm64)) || (linux && (386 || amd64 || arm || arm64 || loong64 || ppc64le || riscv64 || s390x)) || (netbsd && amd64) || (openbsd && (amd64 || arm64)) || windows

package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/tokens"
)

func tokenCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "Manage API and enrollment tokens (on the master's machine)"}
	var dir, role, comment string
	var enroll bool
	var expires time.Duration
	var uses int
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an API token (--role) or a worker enrollment token (--enroll); prints it once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, err := openStore(ctx, dir)
			if err != nil {
				return err
			}
			defer st.Close()
			kind := drover.TokenAPI
			if enroll {
				kind = drover.TokenEnroll
			}
			now := time.Now()
			secret, t, err := tokens.New(kind, now)
			if err != nil {
				return err
			}
			if kind == drover.TokenAPI {
				r := drover.Role(role)
				if !r.Allows(drover.RoleRead) {
					return drover.Errorf(drover.Invalid, "unknown role %q (read, operator or admin)", role)
				}
				t.Role = r
			}
			t.Comment = comment
			if expires > 0 {
				t.Expires = now.Add(expires).UTC()
			}
			if uses > 0 {
				t.UsesLeft = uses
			}
			if err := st.AddToken(ctx, &t); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, secret)
			return nil
		},
	}
	create.Flags().StringVar(&dir, "dir", ".", "master directory")
	create.Flags().BoolVar(&enroll, "enroll", false, "make a worker enrollment token")
	create.Flags().StringVar(&role, "role", "operator", "API token role: read, operator or admin")
	create.Flags().StringVar(&comment, "comment", "", "what the token is for")
	create.Flags().DurationVar(&expires, "expires", 0, "lifetime (e.g. 24h); 0 never expires")
	create.Flags().IntVar(&uses, "uses", 0, "number of uses (enrollment tokens); 0 unlimited")
	c.AddCommand(create)
	return c
}
