// Command drover is the one binary of the Drover CI system: the master, the
// worker, and every client command (force, sendchange, builds, logs, …).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "drover:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a code and, if set, a message, for
// commands whose exit status is their answer (checkconfig, force --wait).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }

// globals are the flags every command shares.
type globals struct {
	logLevel string
	stdout   io.Writer
	stderr   io.Writer
}

func (g *globals) logger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(g.logLevel))); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
}

// run is main without the process: tests call it with their own context,
// arguments and outputs.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "drover",
		Short:         "Drover: continuous integration for a fleet of real machines",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if workerOnly {
		root.Version += " (worker-only build: this platform has no master)"
	}
	root.AddCommand(masterCmds(g)...)
	root.AddCommand(
		workerCmd(g),
		whyCmd(g),
		superviseCmd(g),
		stepCmd(g),
	)
	root.AddCommand(clientCmds(g)...)
	return root.ExecuteContext(ctx)
}
