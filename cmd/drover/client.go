package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
)

// clientFlags locate the master's API.
type clientFlags struct {
	master string
	token  string
}

func (cf *clientFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&cf.master, "master", "", "master URL (default $DROVER_MASTER, else http://127.0.0.1:8010)")
	c.Flags().StringVar(&cf.token, "api-token", "", "API token (default $DROVER_TOKEN)")
}

func (cf *clientFlags) client() *api.Client {
	url := cf.master
	if url == "" {
		url = os.Getenv("DROVER_MASTER")
	}
	if url == "" {
		url = "http://127.0.0.1:8010"
	}
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	tok := cf.token
	if tok == "" {
		tok = os.Getenv("DROVER_TOKEN")
	}
	return api.NewClient(strings.TrimRight(url, "/"), tok)
}

func clientCmds(g *globals) []*cobra.Command {
	return append([]*cobra.Command{forceCmd(g), sendchangeCmd(g), buildsCmd(g), logsCmd(g), cancelCmd(g), reconfigCmd(g)}, queueCmds(g)...)
}

func forceCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var req api.ForceRequest
	var props []string
	var wait bool
	c := &cobra.Command{
		Use:   "force BUILDER",
		Short: "Queue a build; with --wait, follow it and exit 0 only on success",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if req.Properties, err = parsePairs(props, "-p"); err != nil {
				return err
			}
			cl := cf.client()
			r, err := cl.Force(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "request %d queued for %s\n", r.ID, r.Builder)
			if !wait {
				return nil
			}
			return waitAndReport(cmd.Context(), g, cl, r.ID)
		},
	}
	cf.add(c)
	c.Flags().StringVar(&req.Branch, "branch", "", "branch to build")
	c.Flags().StringVar(&req.Revision, "revision", "", "revision to build")
	c.Flags().StringVar(&req.Repository, "repository", "", "repository (default: the builder's)")
	c.Flags().StringArrayVarP(&props, "property", "p", nil, "a build property, key=value (repeatable)")
	c.Flags().IntVar(&req.Priority, "priority", 0, "request priority (higher runs first)")
	c.Flags().StringVar(&req.Reason, "reason", "", "why (shown on the build)")
	c.Flags().BoolVar(&wait, "wait", false, "wait for the build; exit 0 on success, 1 otherwise")
	return c
}

// waitAndReport follows a request to its final build and turns the result
// into the exit status.
func waitAndReport(ctx context.Context, g *globals, cl *api.Client, reqID int64) error {
	b, req, err := cl.WaitRequest(ctx, reqID)
	if err != nil {
		return err
	}
	if b == nil {
		return exitError{code: 1, msg: fmt.Sprintf("request %d was %s before it ran", reqID, req.State)}
	}
	fmt.Fprintf(g.stdout, "build %s #%d on %s: %s", b.Builder, b.Number, b.Worker, b.Result)
	if b.Summary != "" {
		fmt.Fprintf(g.stdout, " (%s)", b.Summary)
	}
	fmt.Fprintf(g.stdout, "\n%s/builds/%d\n", cl.BaseURL, b.ID)
	if b.Result != drover.Success {
		return exitError{code: 1}
	}
	return nil
}

func sendchangeCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var ch drover.Change
	var props []string
	c := &cobra.Command{
		Use:   "sendchange",
		Short: "Tell the master about a change (from a hook or a script)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if ch.Properties, err = parsePairs(props, "-p"); err != nil {
				return err
			}
			got, err := cf.client().SendChange(cmd.Context(), &ch)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "change %d recorded\n", got.ID)
			return nil
		},
	}
	cf.add(c)
	c.Flags().StringVar(&ch.Repository, "repo", "", "repository URL (required)")
	c.Flags().StringVar(&ch.Branch, "branch", "", "branch (required)")
	c.Flags().StringVar(&ch.Revision, "revision", "", "revision (required)")
	c.Flags().StringVar(&ch.Author, "who", "", "author")
	c.Flags().StringVar(&ch.Comments, "comments", "", "commit message")
	c.Flags().StringVar(&ch.Category, "category", "", "category")
	c.Flags().StringArrayVar(&ch.Files, "file", nil, "a changed file (repeatable)")
	c.Flags().StringArrayVarP(&props, "property", "p", nil, "a property, key=value (repeatable)")
	for _, f := range []string{"repo", "branch", "revision"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}

func buildsCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var q api.BuildQuery
	c := &cobra.Command{
		Use:   "builds",
		Short: "List recent builds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			builds, err := cf.client().Builds(cmd.Context(), q)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tBUILDER\t#\tRESULT\tWORKER\tREVISION\tSTARTED\tDURATION\tSUMMARY")
			now := time.Now()
			for _, b := range builds {
				res := string(b.Result)
				if b.State != drover.BuildFinished {
					res = "running"
				}
				rev := b.Source.Revision
				if len(rev) > 10 {
					rev = rev[:10]
				}
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.Builder, b.Number, res, b.Worker, rev,
					b.Started.Local().Format("01-02 15:04:05"), b.Duration(now).Round(time.Second), b.Summary)
			}
			return tw.Flush()
		},
	}
	cf.add(c)
	c.Flags().StringVar(&q.Builder, "builder", "", "only this builder")
	c.Flags().StringVar(&q.Worker, "worker", "", "only builds on this worker")
	c.Flags().IntVar(&q.Limit, "limit", 20, "how many")
	return c
}

func logsCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var follow bool
	var step int
	c := &cobra.Command{
		Use:   "logs BUILD",
		Short: "Print a build's logs; --follow tails them until the build ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("build %q: want a build ID", args[0])
			}
			ctx := cmd.Context()
			cl := cf.client()
			printed := map[int64]bool{}
			for {
				d, err := cl.Build(ctx, id)
				if err != nil {
					return err
				}
				for _, l := range d.Logs {
					if printed[l.ID] || (step >= 0 && l.StepIndex != step) {
						continue
					}
					name := fmt.Sprint(l.StepIndex)
					if l.StepIndex < len(d.Steps) {
						name = d.Steps[l.StepIndex].Name
					}
					fmt.Fprintf(g.stdout, "=== step %d: %s ===\n", l.StepIndex, name)
					if err := cl.Log(ctx, l.ID, 0, follow, g.stdout); err != nil {
						return err
					}
					printed[l.ID] = true
				}
				if !follow || d.Build.State == drover.BuildFinished {
					if follow {
						fmt.Fprintf(g.stdout, "=== build %d: %s ===\n", d.Build.ID, d.Build.Result)
					}
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	cf.add(c)
	c.Flags().BoolVarP(&follow, "follow", "f", false, "follow live output until the build ends")
	c.Flags().IntVar(&step, "step", -1, "only this step's log")
	return c
}

func cancelCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var reason string
	c := &cobra.Command{
		Use:   "cancel BUILD",
		Short: "Stop a running build",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("build %q: want a build ID", args[0])
			}
			if err := cf.client().CancelBuild(cmd.Context(), id, reason); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "build %d cancelled\n", id)
			return nil
		},
	}
	cf.add(c)
	c.Flags().StringVar(&reason, "reason", "", "why")
	return c
}
