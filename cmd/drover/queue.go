package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
)

// queueCmds are the client commands for the queue, locks and the fleet's
// availability.
func queueCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{queueCmd(g), locksCmd(g), workersCmd(g), availabilityCmd(g), mastersCmd(g)}
}

func queueCmd(g *globals) *cobra.Command {
	var cf clientFlags
	c := &cobra.Command{
		Use:   "queue",
		Short: "List pending build requests in the order they run, and why each waits",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := cf.client().Queue(cmd.Context())
			if err != nil {
				return err
			}
			if len(q) == 0 {
				fmt.Fprintln(g.stdout, "nothing waiting")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REQUEST\tBUILDER\tPRIORITY\tAGE\tSOURCE\tWAITING")
			for _, e := range q {
				r := e.Request
				waiting := e.Waiting
				if !e.NoWorkerSince.IsZero() && !strings.Contains(waiting, "(for ") {
					waiting += fmt.Sprintf(" (no eligible worker for %s)", roughAge(now.Sub(e.NoWorkerSince)))
				}
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.Builder, r.Priority,
					roughAge(now.Sub(r.Submitted)), sourceString(r.Source), oneLine(waiting))
			}
			return tw.Flush()
		},
	}
	cf.add(c)
	return c
}

func locksCmd(g *globals) *cobra.Command {
	var cf clientFlags
	c := &cobra.Command{
		Use:   "locks",
		Short: "List locks with their holders and waiters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ls, err := cf.client().Locks(cmd.Context())
			if err != nil {
				return err
			}
			if len(ls) == 0 {
				fmt.Fprintln(g.stdout, "no locks")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "LOCK\tSCOPE\tUSED\tHOLDERS\tWAITERS")
			for _, l := range ls {
				scope := string(l.Scope)
				if l.Worker != "" {
					scope = "worker " + l.Worker
				}
				fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", l.Name, scope, lockUsed(l), l.Max,
					holdersString(l.Holders, "-"), holdersString(l.Waiters, "-"))
			}
			return tw.Flush()
		},
	}
	cf.add(c)
	return c
}

func workersCmd(g *globals) *cobra.Command {
	var cf clientFlags
	c := &cobra.Command{
		Use:   "workers",
		Short: "List workers: connected, availability and who set it, platform, version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ws, err := cf.client().Workers(cmd.Context())
			if err != nil {
				return err
			}
			if len(ws) == 0 {
				fmt.Fprintln(g.stdout, "no workers")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WORKER\tCONNECTED\tAVAILABILITY\tSET BY\tPLATFORM\tVERSION")
			for i := range ws {
				w := &ws[i]
				a, reason, by := w.Effective()
				who := by
				if reason != "" {
					who += ": " + reason
				}
				if w.Override != nil || w.Downtime != nil {
					// What applies again once the override or the
					// downtime ends.
					own := w.Availability
					if own == "" {
						own = drover.Eager
					}
					if w.Downtime != nil && w.Override != nil {
						who += fmt.Sprintf(" (operator's: %s; worker's own: %s)", w.Override.Availability, own)
					} else {
						who += fmt.Sprintf(" (worker's own: %s)", own)
					}
				}
				connected := "no"
				if w.Connected {
					connected = "yes"
				}
				platform := strings.Trim(w.OS+"/"+w.Arch, "/")
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.Name, connected, a, oneLine(who), orDash(platform), orDash(w.Version))
			}
			return tw.Flush()
		},
	}
	cf.add(c)
	c.AddCommand(approvalCmds(g)...)
	return c
}

func mastersCmd(g *globals) *cobra.Command {
	var cf clientFlags
	c := &cobra.Command{
		Use:   "masters",
		Short: "List the masters of the site (sharing one database): alive or dead, last heartbeat",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := cf.client().Site(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MASTER\tSTATE\tHEARTBEAT\tWEB\tWORKERS\tVERSION")
			for _, m := range st.Masters {
				state := "dead"
				if m.Alive {
					state = "alive"
				}
				id := m.ID
				if id == st.This {
					id += " (this)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s ago\t%s\t%s\t%s\n", id, state, roughAge(time.Since(m.Heartbeat)),
					orDash(m.URL), orDash(m.WorkersAddr), orDash(m.Version))
			}
			return tw.Flush()
		},
	}
	cf.add(c)
	return c
}

func availabilityCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var reason string
	c := &cobra.Command{
		Use:   "availability WORKER STATE",
		Short: "Set a worker's availability as an operator (eager, reluctant, draining, offline; auto clears)",
		Long: `Set a worker's availability as an operator, through the master's API
(needs an operator token). The operator's setting wins over the worker's own
until cleared with STATE auto. Draining and offline never stop a running
build: the worker finishes what it runs and takes nothing new.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			state := strings.ToLower(strings.TrimSpace(args[1]))
			if state != "auto" {
				if _, err := drover.ParseAvailability(state); err != nil {
					return fmt.Errorf("%s (or auto to clear the operator's setting)", drover.Message(err))
				}
			}
			w, err := cf.client().SetAvailability(cmd.Context(), args[0], state, reason)
			if err != nil {
				return err
			}
			a, why, by := w.Effective()
			fmt.Fprintf(g.stdout, "worker %s: %s, set by %s", w.Name, a, by)
			if why != "" {
				fmt.Fprintf(g.stdout, ": %s", why)
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	cf.add(c)
	c.Flags().StringVar(&reason, "reason", "", "why (shown on the worker's page)")
	return c
}

// lockUsed counts the slots l's holders take: an exclusive holder takes
// them all.
func lockUsed(l drover.LockState) int {
	used := 0
	for _, h := range l.Holders {
		if h.Exclusive {
			used += l.Max
		} else {
			used++
		}
	}
	return min(used, max(l.Max, 0))
}

// holdersString lists holders or waiters as "build 12 (exclusive)".
func holdersString(hs []drover.LockHolder, none string) string {
	if len(hs) == 0 {
		return none
	}
	parts := make([]string, 0, len(hs))
	for _, h := range hs {
		var s string
		switch {
		case h.BuildID != 0:
			s = fmt.Sprintf("build %d", h.BuildID)
		case h.RequestID != 0:
			s = fmt.Sprintf("request %d", h.RequestID)
		default:
			s = h.Builder
		}
		var notes []string
		if h.Step >= 0 {
			notes = append(notes, fmt.Sprintf("step %d", h.Step))
		}
		if h.Exclusive {
			notes = append(notes, "exclusive")
		}
		if len(notes) > 0 {
			s += " (" + strings.Join(notes, ", ") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// sourceString is a source stamp as "branch@revision", short.
func sourceString(s drover.SourceStamp) string {
	rev := s.Revision
	if len(rev) > 10 {
		rev = rev[:10]
	}
	switch {
	case s.Branch != "" && rev != "":
		return s.Branch + "@" + rev
	case s.Branch != "":
		return s.Branch
	case rev != "":
		return rev
	}
	return "default"
}

// roughAge is d in its largest unit, for an AGE column.
func roughAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// oneLine keeps a table row on one line whatever the text holds.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
