package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/drover-ci/drover/internal/gitcheckout"
	"github.com/drover-ci/drover/internal/workerproto"
)

// A RunCommand with a Checkout is not run as a process the master
// describes: the agent checks the revision out itself, running the git
// program with argv (internal/gitcheckout), so that a checkout is the
// same on Windows as on a POSIX system, where the master's old shell
// script ran. Like a transfer it runs inside the worker process: a worker
// that restarts meanwhile comes back without it, and the master retries
// the build.
//
// How it ends tells the master whose fault a failure is:
//
//	exit 0, EXITED        checked out; got_revision published before
//	SOURCE_FAILED         the source could not be fetched from (infra, the source's)
//	START_FAILED          git failed on this machine (infra, the worker's)
//	exit 1, EXITED        the source has no such branch or revision
//	MAX_TIME, NO_OUTPUT_TIMEOUT, CANCELLED as for any command

// gotRevisionProperty is the property a checkout sets to the commit it
// checked out.
const gotRevisionProperty = "got_revision"

// runCheckout performs the checkout command c and finishes it.
func (a *Agent) runCheckout(c *command) {
	start := time.Now()
	ctx, errMaxTime, stop := a.inProcessContext(c, "checkout")
	defer stop()
	stdout := streamWriter{c: c, s: workerproto.Stream_STREAM_STDOUT}
	say := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	end := func(code int, reason workerproto.FinishReason, text string) {
		close(c.exited)
		c.finish(code, time.Since(start), reason, text)
	}

	co := c.req.GetCheckout()
	wd, err := workdir(a.dir, c.req.GetBuilder(), c.req.GetWorkdir())
	if err != nil {
		say("checkout failed: %v", err)
		end(-1, workerproto.FinishReason_FINISH_REASON_START_FAILED, err.Error())
		return
	}
	idle := time.Duration(c.req.GetNoOutputTimeoutMs()) * time.Millisecond
	spec := gitcheckout.Spec{
		Dir:      wd,
		URL:      co.GetUrl(),
		Branch:   co.GetBranch(),
		Revision: co.GetRevision(),
		Options: gitcheckout.Options{
			Mode:             co.GetMode(),
			Method:           co.GetMethod(),
			Depth:            int(co.GetDepth()),
			Filter:           co.GetFilter(),
			Submodules:       co.GetSubmodules(),
			RecloneOnFailure: co.GetRecloneOnFailure(),
		},
		Env:         environ(c.req.GetEnv(), wd),
		Stdout:      stdout,
		Stderr:      streamWriter{c: c, s: workerproto.Stream_STREAM_STDERR},
		IdleTimeout: idle,
	}
	say("checkout of source %s (%s) into %s", co.GetSource(), co.GetUrl(), wd)
	res, err := gitcheckout.Run(ctx, spec)

	c.mu.Lock()
	killed := c.killed
	c.mu.Unlock()
	switch {
	case errors.Is(context.Cause(ctx), errMaxTime):
		say("%v", errMaxTime)
		end(-1, workerproto.FinishReason_FINISH_REASON_MAX_TIME, errMaxTime.Error())
	case killed != nil:
		say("checkout stopped: %s", killed.text)
		end(-1, killed.reason, killed.text)
	case errors.Is(err, gitcheckout.ErrIdle):
		text := fmt.Sprintf("no output for %s: killed", idle)
		say("checkout stopped: %s", text)
		end(-1, workerproto.FinishReason_FINISH_REASON_NO_OUTPUT_TIMEOUT, text)
	case err != nil:
		say("checkout failed (%s): %v", gitcheckout.KindOf(err), err)
		switch gitcheckout.KindOf(err) {
		case gitcheckout.Source:
			end(-1, workerproto.FinishReason_FINISH_REASON_SOURCE_FAILED, err.Error())
		case gitcheckout.NotFound:
			end(1, workerproto.FinishReason_FINISH_REASON_EXITED, err.Error())
		case gitcheckout.Stopped:
			end(-1, workerproto.FinishReason_FINISH_REASON_CANCELLED, err.Error())
		default:
			end(-1, workerproto.FinishReason_FINISH_REASON_START_FAILED, err.Error())
		}
	default:
		// Published before the Finished, so the master has it when the
		// step ends; printed too, for people and for a master that reads
		// it from the output as it did the shell script's.
		a.publishProperty(c.id, gotRevisionProperty, res.Revision)
		say("%s=%s", gotRevisionProperty, res.Revision)
		end(0, workerproto.FinishReason_FINISH_REASON_EXITED, "")
	}
}

// streamWriter writes a command's output on one stream.
type streamWriter struct {
	c *command
	s workerproto.Stream
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.c.write(w.s, p, spoolLoc{})
	return len(p), nil
}
