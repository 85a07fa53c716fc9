package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover/internal/agent"
)

func workerCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "worker", Short: "Run a worker that builds for a master"}
	var cfg agent.Config
	var labels []string
	run := &cobra.Command{
		Use:   "run",
		Short: "Connect to a master and run its builds until stopped",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if cfg.Labels, err = parsePairs(labels, "--label"); err != nil {
				return err
			}
			cfg.Version = version
			cfg.Logger = g.logger()
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := run.Flags()
	f.StringVar(&cfg.Master, "master", "", "master's worker address, HOST:PORT (stored in --dir after the first run)")
	f.StringVar(&cfg.Token, "token", "", "enrollment token (first run) or this worker's own token")
	f.StringVar(&cfg.Name, "name", "", "worker name (first run)")
	f.StringVar(&cfg.Dir, "dir", "drover-worker", "worker directory: state, and builds under DIR/<builder>/")
	f.StringVar(&cfg.CAFingerprint, "ca-sha256", "", "the master's CA fingerprint, sha256:…, printed by `drover master init` (first run)")
	f.BoolVar(&cfg.Plaintext, "plaintext", false, "connect without TLS (loopback masters only)")
	f.StringArrayVar(&labels, "label", nil, "a static fact of this machine, key=value (repeatable)")
	f.IntVar(&cfg.MaxBuilds, "max-builds", 1, "builds to run at once")
	c.AddCommand(run)
	return c
}

// parsePairs reads key=value flags.
func parsePairs(pairs []string, flag string) (map[string]string, error) {
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want key=value", flag, p)
		}
		out[k] = v
	}
	return out, nil
}
