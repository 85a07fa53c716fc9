package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/agent"
	"github.com/drover-ci/drover/internal/timewindow"
)

func workerCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "worker", Short: "Run a worker that builds for a master"}
	c.AddCommand(workerRunCmd(g), workerAvailabilityCmd(g), joinCmd(g), uninstallCmd(g))
	return c
}

func workerRunCmd(g *globals) *cobra.Command {
	var cfg agent.Config
	var labels, windows []string
	var timezone, tz, overLoad string
	var maxLoad float64
	run := &cobra.Command{
		Use:   "run",
		Short: "Connect to a master and run its builds until stopped",
		Long: `Connect to a master and run its builds until stopped.

The owner's terms (--available, --timezone, --max-load, --over-load) are
stored in --dir: a later run keeps them unless given again. Outside every
--available window the worker is offline; above --max-load it is
reluctant (or offline). ` + "`drover worker availability`" + ` overrides both by hand.

A window is [DAYS] HH:MM-HH:MM [ZONE]: daily ("22:00-07:00", which crosses
midnight), weekly ("Mon-Fri 09:00-17:00", "Sat,Sun 00:00-24:00", "Fri
22:00-06:00" runs into Saturday), optionally in a zone of its own ("Wed
08:00-10:00 Europe/Berlin"); one without is read in --timezone, else the
machine's local time. A downtime the master's config sets for the worker
wins over these windows.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if cfg.Labels, err = parsePairs(labels, "--label"); err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("tz") {
				if f.Changed("timezone") && tz != timezone {
					return fmt.Errorf("--tz and --timezone are the same setting; give one")
				}
				timezone = tz
			}
			if f.Changed("available") || f.Changed("timezone") || f.Changed("tz") || f.Changed("max-load") || f.Changed("over-load") {
				sched, err := agent.LoadSchedule(cfg.Dir)
				if err != nil {
					return err
				}
				if f.Changed("available") {
					if sched.Windows, err = parseWindows(windows); err != nil {
						return err
					}
				}
				if f.Changed("timezone") || f.Changed("tz") {
					sched.Timezone = timezone
				}
				if f.Changed("max-load") {
					sched.MaxLoad = maxLoad
				}
				if f.Changed("over-load") {
					sched.OverLoad = drover.Availability(overLoad)
				}
				cfg.Schedule = &sched
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
	f.StringSliceVar(&cfg.Masters, "master", nil, "master's worker address, HOST:PORT; the masters of a site: comma-separated or repeated, tried in turn (stored in --dir after the first run)")
	f.StringVar(&cfg.Token, "token", "", "enrollment token (first run) or this worker's own token")
	f.StringVar(&cfg.Name, "name", "", "worker name (first run)")
	f.StringVar(&cfg.Dir, "dir", "drover-worker", "worker directory: state, and builds under DIR/<builder>/")
	f.StringVar(&cfg.CAFingerprint, "ca-sha256", "", "the master's CA fingerprint, sha256:…, printed by `drover master init` (first run)")
	f.BoolVar(&cfg.Plaintext, "plaintext", false, "connect without TLS (loopback masters only)")
	f.StringArrayVar(&labels, "label", nil, "a static fact of this machine, key=value (repeatable)")
	f.IntVar(&cfg.MaxBuilds, "max-builds", 1, "builds to run at once")
	f.StringArrayVar(&windows, "available", nil, "build only within this window, [DAYS] HH:MM-HH:MM [ZONE]: \"22:00-07:00\", \"Mon-Fri 09:00-17:00\", \"Sat,Sun 00:00-24:00 Europe/Berlin\"; repeatable; \"always\" clears the stored windows")
	f.StringVar(&timezone, "timezone", "", "IANA time zone of the --available windows that name none, e.g. Europe/Paris (default: local time)")
	f.StringVar(&tz, "tz", "", "short for --timezone")
	f.Float64Var(&maxLoad, "max-load", 0, "1-minute load average above which the worker is reluctant (see --over-load); 0 for no ceiling")
	f.StringVar(&overLoad, "over-load", "reluctant", "availability above --max-load: reluctant or offline")
	return run
}

// parseWindows reads the --available flags; "always" alone means no
// window.
func parseWindows(flags []string) ([]timewindow.Window, error) {
	if len(flags) == 1 && strings.EqualFold(strings.TrimSpace(flags[0]), "always") {
		return nil, nil
	}
	ws, err := timewindow.ParseList(flags)
	if err != nil {
		return nil, fmt.Errorf("--available: %w (want %s)", err, timewindow.Syntax)
	}
	return ws, nil
}

func workerAvailabilityCmd(g *globals) *cobra.Command {
	var dir, reason string
	var asJSON bool
	c := &cobra.Command{
		Use:   "availability [eager|reluctant|draining|offline|auto]",
		Short: "Show or set when this worker builds, by hand",
		Long: `Show or set the worker's availability, as its owner.

eager builds happily; reluctant only when no eager worker can; draining
finishes what runs and takes nothing new; offline takes nothing. auto
clears the manual setting, so the --available windows and the --max-load
ceiling of ` + "`drover worker run`" + ` decide again. Running builds are never
killed. The setting persists in --dir across restarts; with no worker
running it applies when the worker starts. A crontab line is enough:

  0 7 * * 1-5  drover worker availability offline --dir /var/lib/drover --reason "office hours"
  0 19 * * 1-5 drover worker availability auto --dir /var/lib/drover

An operator's override on the master wins over the owner's setting.`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"eager", "reluctant", "draining", "offline", "auto"},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				if reason != "" {
					return fmt.Errorf("--reason needs an availability to set")
				}
				st, running, err := agent.QueryAvailability(cmd.Context(), dir)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(out, st)
				}
				if !running {
					fmt.Fprintf(out, "No worker is running in %s; when it starts it will be\n", dir)
				}
				printAvailability(out, st)
				return nil
			}
			st, running, err := agent.SetAvailability(cmd.Context(), dir, args[0], reason)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(out, st)
			}
			switch {
			case running && args[0] == "auto":
				fmt.Fprintf(out, "Manual setting cleared; the worker is now %s\n", st.Summary())
			case running:
				fmt.Fprintf(out, "The worker is now %s\n", st.Summary())
			case args[0] == "auto":
				fmt.Fprintf(out, "Manual setting cleared in %s; no worker is running there. When it starts it will be %s\n", dir, st.Summary())
			default:
				fmt.Fprintf(out, "Saved in %s; no worker is running there, so it applies when the worker starts: %s\n", dir, st.Summary())
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", "drover-worker", "worker directory, as given to `drover worker run`")
	f.StringVar(&reason, "reason", "", "why, shown on the master (default \"set by the owner\")")
	f.BoolVar(&asJSON, "json", false, "print the status as JSON")
	return c
}

// printAvailability shows a worker's availability and the settings behind it.
func printAvailability(w io.Writer, st agent.AvailabilityStatus) {
	fmt.Fprintf(w, "  %s\n", st.Summary())
	if m := st.Manual; m != nil {
		when := ""
		if !m.SetAt.IsZero() {
			when = " at " + m.SetAt.Local().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(w, "  manual:   %s%s\n", m.Availability, when)
	} else {
		fmt.Fprintf(w, "  manual:   none (auto)\n")
	}
	if len(st.Windows) > 0 {
		ws := make([]string, len(st.Windows))
		for i, win := range st.Windows {
			ws[i] = win.String()
		}
		fmt.Fprintf(w, "  windows:  %s (%s)\n", strings.Join(ws, ", "), st.Timezone)
	} else {
		fmt.Fprintf(w, "  windows:  none (always)\n")
	}
	if st.MaxLoad > 0 {
		load := "unknown"
		if st.Load != nil {
			load = strconv.FormatFloat(*st.Load, 'f', 2, 64)
		}
		fmt.Fprintf(w, "  max load: %s, then %s (load now %s)\n", strconv.FormatFloat(st.MaxLoad, 'f', -1, 64), st.OverLoad, load)
	} else {
		fmt.Fprintf(w, "  max load: none\n")
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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
