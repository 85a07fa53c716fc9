//go:build (darwin && (amd64 || arm64)) || (freebsd && (386 || amd64 || arm || arm64)) || (linux && (386 || amd64 || arm || arm64 || loong64 || ppc64le || riscv64 || s390x)) || (netbsd && amd64) || (openbsd && (amd64 || arm64)) || windows

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/pki"
	"github.com/drover-ci/drover/internal/store"
	"github.com/drover-ci/drover/internal/tokens"
)

func masterCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "master", Short: "Set up and run a master"}
	c.AddCommand(masterInitCmd(g), masterRunCmd(g), masterStopCmd(g))
	return c
}

// configFile is the config's name inside a master directory.
const configFile = "master.star"

// pidFileName records a running master's process, for `master stop`.
const pidFileName = "master.pid"

// addressesFile records where a running master listens, for scripts and
// tests that start it on port 0.
const addressesFile = "addresses.json"

func masterInitCmd(g *globals) *cobra.Command {
	var hosts []string
	var repo, caFrom string
	var asJSON bool
	c := &cobra.Command{
		Use:   "init DIR",
		Short: "Create a master directory: sample config, CA and certificate, admin and enrollment tokens",
		Long: `Create a master directory: a sample config, a CA and the server certificate
it signs for the worker port, an admin API token and a worker enrollment
token. Run again, it keeps the config and the CA (the fingerprint workers
pinned) and makes new tokens.

A second master of a site (masters sharing one PostgreSQL database) is
made with --ca-from FIRST_DIR: it copies the first master's CA, so its own
server certificate is signed by it and workers pinned to the site's
fingerprint trust both; and, unless DIR has a config, the first master's
config (the same database).`,
		Example: `  drover master init /srv/drover
  drover master init /srv/drover2 --ca-from /srv/drover --host ci2.example.org`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			return masterInit(cmd.Context(), g.stdout, dir, repo, hosts, caFrom, asJSON)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the fingerprint and tokens as JSON, for scripts")
	c.Flags().StringSliceVar(&hosts, "host", nil, "extra DNS names or IP addresses workers use to reach the master (for its certificate)")
	c.Flags().StringVar(&repo, "repo", "https://example.org/project.git", "repository URL for the sample config")
	c.Flags().StringVar(&caFrom, "ca-from", "", "directory of another master of the site: use its CA (and its config, if DIR has none)")
	return c
}

type initResult struct {
	fingerprint string
	adminToken  string
	enrollToken string
	// caFrom is the master directory whose CA was copied, if any;
	// configFrom the one whose config was.
	caFrom, configFrom string
	// ownDatabase is set when the config names no database: the master
	// keeps its state in DIR/state.sqlite, shared with no other master.
	ownDatabase bool
}

// initDir creates what a master needs in dir and returns its secrets. It
// keeps an existing config and CA, so running it twice is harmless. With
// caFrom (another master's directory) it first copies that master's CA,
// and its config when dir has none; a different CA already in dir is a
// conflict, not replaced.
func initDir(ctx context.Context, dir, sample string, hosts []string, caFrom string) (*initResult, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	res := &initResult{}
	if caFrom != "" {
		from, err := filepath.Abs(caFrom)
		if err != nil {
			return nil, err
		}
		if _, err := pki.CopyCA(from, dir); err != nil {
			return nil, fmt.Errorf("--ca-from %s: %w", caFrom, err)
		}
		caFrom, res.caFrom = from, from
	}
	cfgPath := filepath.Join(dir, configFile)
	if _, err := os.Stat(cfgPath); errors.Is(err, os.ErrNotExist) {
		copied := false
		if caFrom != "" && caFrom != dir {
			if copied, err = copyConfig(caFrom, dir); err != nil {
				return nil, err
			}
		}
		if copied {
			res.configFrom = caFrom
		} else if err := os.WriteFile(cfgPath, []byte(sample), 0o644); err != nil {
			return nil, fmt.Errorf("write config: %w", err)
		}
	}
	host, _ := os.Hostname()
	fp, err := pki.Init(dir, append([]string{host}, hosts...))
	if err != nil {
		return nil, err
	}
	st, dsn, err := openStoreDSN(ctx, dir)
	if err != nil {
		return nil, err
	}
	res.fingerprint, res.ownDatabase = fp, dsn == ""
	defer st.Close()
	now := time.Now()
	admin, at, err := tokens.New(drover.TokenAPI, now)
	if err != nil {
		return nil, err
	}
	at.Role, at.Comment = drover.RoleAdmin, "created by master init"
	if err := st.AddToken(ctx, &at); err != nil {
		return nil, err
	}
	enroll, et, err := tokens.New(drover.TokenEnroll, now)
	if err != nil {
		return nil, err
	}
	et.Comment = "created by master init"
	if err := st.AddToken(ctx, &et); err != nil {
		return nil, err
	}
	res.adminToken, res.enrollToken = admin, enroll
	return res, nil
}

// copyConfig copies the config of the master directory from into dir,
// with every file it loads, and reports whether from had one.
func copyConfig(from, dir string) (bool, error) {
	path := filepath.Join(from, configFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return false, fmt.Errorf("read the config of %s, to copy it:\n%w", from, err)
	}
	for _, f := range cfg.Files {
		rel, err := filepath.Rel(from, f)
		if err != nil || !filepath.IsLocal(rel) {
			return false, fmt.Errorf("copy the config of %s: %s is outside its directory", from, f)
		}
		fi, err := os.Stat(f)
		if err != nil {
			return false, fmt.Errorf("copy the config of %s: %w", from, err)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return false, fmt.Errorf("copy the config of %s: %w", from, err)
		}
		dst := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return false, fmt.Errorf("copy the config of %s: %w", from, err)
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			return false, fmt.Errorf("copy the config of %s: %w", from, err)
		}
	}
	return true, nil
}

// openStore opens the store of the master in dir: the database its config
// names, or state.sqlite beside it.
func openStore(ctx context.Context, dir string) (store.Store, error) {
	st, _, err := openStoreDSN(ctx, dir)
	return st, err
}

// openStoreDSN is openStore, and also returns the database the config
// names ("" for state.sqlite).
func openStoreDSN(ctx context.Context, dir string) (store.Store, string, error) {
	var named string
	if _, err := os.Stat(filepath.Join(dir, configFile)); err == nil {
		cfg, err := config.Load(filepath.Join(dir, configFile))
		if err != nil {
			return nil, "", fmt.Errorf("read the config for its database:\n%w", err)
		}
		named = cfg.Master.Database
	}
	dsn := named
	if dsn == "" {
		dsn = filepath.Join(dir, "state.sqlite")
	}
	st, err := store.Open(ctx, dsn)
	return st, named, err
}

func masterInit(ctx context.Context, out io.Writer, dir, repo string, hosts []string, caFrom string, asJSON bool) error {
	res, err := initDir(ctx, dir, config.SampleConfig(repo), hosts, caFrom)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(out).Encode(map[string]string{
			"dir": dir, "ca_sha256": res.fingerprint, "admin_token": res.adminToken, "enroll_token": res.enrollToken,
		})
	}
	host, _ := os.Hostname()
	fmt.Fprintf(out, `Master directory ready: %s

  config         %s   (edit it, then: drover checkconfig %s)
  CA fingerprint %s

Admin API token (shown once; keep it safe):
  %s

Worker enrollment token (shown once; unlimited uses until revoked):
  %s

Start the master:
  drover master run %s

Connect a worker (on any machine that can reach this one):
  drover worker run --master %s:9989 --name $(hostname) --dir ~/drover-worker \
    --token %s \
    --ca-sha256 %s

Use the API:
  export DROVER_MASTER=http://%s:8010 DROVER_TOKEN=%s
  drover builds
`, dir, filepath.Join(dir, configFile), dir, res.fingerprint, res.adminToken, res.enrollToken,
		dir, host, res.enrollToken, res.fingerprint, host, res.adminToken)
	if res.caFrom != "" {
		fmt.Fprintf(out, `
A master of the site of %s: its CA (the fingerprint above), so workers
pinned to it trust this master too; give workers every master of the site,
e.g. --master %s:9989,OTHER:9989, to fail over between them.
`, res.caFrom, host)
		if res.configFrom != "" {
			fmt.Fprintf(out, "The config is a copy of %s's.\n", res.configFrom)
		}
		if res.ownDatabase {
			fmt.Fprintf(out, `Note: the config names no database, so this master keeps its own
state.sqlite and shares nothing with the others: masters of a site share
one PostgreSQL database, drover.master(database = "postgres://…").
`)
		}
	}
	return nil
}

func masterRunCmd(g *globals) *cobra.Command {
	var httpAddr, workersAddr string
	var plaintext bool
	c := &cobra.Command{
		Use:   "run DIR",
		Short: "Run a master from its directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			cfg, err := config.Load(filepath.Join(dir, configFile))
			if err != nil {
				return exitError{code: 1, msg: "drover: config refused, not starting:\n" + err.Error()}
			}
			logger := g.logger()
			sm, err := openMaster(cmd.Context(), masterSetup{dir: dir, cfg: cfg, configPath: filepath.Join(dir, configFile),
				httpAddr: httpAddr, workersAddr: workersAddr, plaintext: plaintext, logger: logger})
			if err != nil {
				return err
			}
			m := sm.m
			addrs, _ := json.Marshal(map[string]string{"http": sm.HTTPAddr(), "workers": sm.WorkersAddr(), "ca_sha256": sm.fingerprint})
			if err := os.WriteFile(filepath.Join(dir, addressesFile), addrs, 0o644); err != nil {
				logger.Warn("record addresses", "err", err)
			}
			fmt.Fprintf(g.stdout, "drover master: web UI and API at http://%s, workers at %s\n", sm.HTTPAddr(), sm.WorkersAddr())
			ctx := cmd.Context()
			pidFile := filepath.Join(dir, pidFileName)
			if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
				logger.Warn("record pid", "err", err)
			}
			defer os.Remove(pidFile)
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			// The first SIGINT or SIGTERM ends ctx: a graceful stop. A
			// second one stops at once.
			stops := make(chan os.Signal, 2)
			signal.Notify(stops, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(stops)
			done := make(chan struct{})
			defer close(done)
			go func() { // owned: ends when Run returns and closes done
				seen := 0
				for {
					select {
					case <-done:
						return
					case <-hup:
						// The error is logged by Reload; the old config stays.
						_ = m.Reload(ctx)
					case <-stops:
						if seen++; seen == 2 {
							fmt.Fprintln(g.stderr, "drover master: stopping now")
							m.StopNow()
						}
					}
				}
			}()
			return sm.run(ctx)
		},
	}
	c.Flags().StringVar(&httpAddr, "http", "", "listen address for the web UI and API (default: the config's, :8010)")
	c.Flags().StringVar(&workersAddr, "workers", "", "listen address for workers (default: the config's, :9989)")
	c.Flags().BoolVar(&plaintext, "plaintext", false, "serve workers without TLS (loopback only, unless the config allows it)")
	return c
}

func checkconfigCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "checkconfig [DIR|FILE]",
		Short: "Check a config with the loader the master uses; exit 1 with file:line errors",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "."
			if len(args) == 1 {
				path = args[0]
			}
			cfg, err := config.Load(path)
			if err != nil {
				return exitError{code: 1, msg: err.Error()}
			}
			fmt.Fprintf(g.stdout, "config OK: %d builders, %d schedulers, %d sources (%s)\n",
				len(cfg.Builders), len(cfg.Schedulers), len(cfg.Sources), strings.Join(cfg.Files, ", "))
			return nil
		},
	}
}

func masterStopCmd(g *globals) *cobra.Command {
	var now bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "stop DIR",
		Short: "Stop the master running from DIR: no new builds, running ones finish within the config's stop_grace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(filepath.Join(args[0], pidFileName))
			if err != nil {
				return drover.Errorf(drover.NotFound, "no master is running from %s (%v)", args[0], err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 1 {
				return drover.Errorf(drover.Invalid, "bad pid file in %s", args[0])
			}
			p, err := os.FindProcess(pid)
			if err != nil {
				return err
			}
			if err := p.Signal(syscall.SIGTERM); err != nil {
				return drover.Errorf(drover.NotFound, "master process %d: %v", pid, err)
			}
			if now {
				time.Sleep(100 * time.Millisecond)
				_ = p.Signal(syscall.SIGTERM)
			}
			fmt.Fprintf(g.stdout, "stopping master %d…\n", pid)
			deadline := time.Now().Add(timeout)
			for time.Now().Before(deadline) {
				if p.Signal(syscall.Signal(0)) != nil {
					fmt.Fprintln(g.stdout, "master stopped")
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(200 * time.Millisecond):
				}
			}
			return fmt.Errorf("master %d still running after %s (running builds may still be finishing)", pid, timeout)
		},
	}
	var graceful bool
	c.Flags().BoolVar(&graceful, "graceful", true, "let running builds finish within the config's stop_grace (the default)")
	c.Flags().BoolVar(&now, "now", false, "do not wait for running builds (they go on when the master restarts)")
	c.MarkFlagsMutuallyExclusive("graceful", "now")
	c.Flags().DurationVar(&timeout, "timeout", time.Hour, "how long to wait for the master to exit")
	return c
}
