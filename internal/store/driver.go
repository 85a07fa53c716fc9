package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/drover-ci/drover"
)

// ErrNotDriver is wrapped by a build write whose master no longer drives
// the build: another master of the site adopted it after this one's
// heartbeat lapsed. The writer must let go of the build.
var ErrNotDriver = errors.New("this master no longer drives the build")

// buildWriter is the BuildWriter of one master (see Store.Builds).
type buildWriter struct {
	s      *DB
	master string
}

// Builds returns the writes of running builds as master drives them.
func (s *DB) Builds(master string) BuildWriter { return buildWriter{s: s, master: master} }

// inTx runs fn in a transaction that first checks that w's master drives
// build id (guard).
func (w buildWriter) inTx(ctx context.Context, id int64, fn func(tx *sql.Tx) error) error {
	return w.s.inTx(ctx, func(tx *sql.Tx) error {
		if err := w.guard(ctx, tx, id); err != nil {
			return err
		}
		return fn(tx)
	})
}

// guard fails, with NotFound or a Conflict wrapping ErrNotDriver, unless
// w's master drives build id. On PostgreSQL it takes a share lock on the
// build's row until tx ends, so that an AdoptBuild (an UPDATE of that
// row) waits for this write instead of slipping in between the check and
// the write: every write of the old driver lands before the adoption, or
// is refused after it.
func (w buildWriter) guard(ctx context.Context, tx *sql.Tx, id int64) error {
	var master string
	err := w.s.prep(tx).QueryRowContext(ctx, w.s.q(`SELECT master FROM builds WHERE id = ?`+w.s.d.forShare), id).Scan(&master)
	if errors.Is(err, sql.ErrNoRows) {
		return drover.Errorf(drover.NotFound, "build %d not found", id)
	}
	if err != nil {
		return fmt.Errorf("check the driver of build %d: %w", id, err)
	}
	if master != w.master {
		return drover.Errorf(drover.Conflict, "build %d is driven by master %q, not %q: %w", id, master, w.master, ErrNotDriver)
	}
	return nil
}

// Abandon is how AbandonBuild ends a build.
type Abandon struct {
	Result  drover.Result
	Summary string
	// StepSummary is set on every step that had not finished, which ends
	// with Result.
	StepSummary string
	// Logs are the build's logs that were not complete, with their final
	// size; they are recorded complete.
	Logs     []drover.Log
	Finished time.Time
	Requeue  bool
}

// AbandonBuild ends running build id that its master cannot follow (see
// BuildWriter), in one transaction.
func (w buildWriter) AbandonBuild(ctx context.Context, id int64, a Abandon) error {
	err := w.inTx(ctx, id, func(tx *sql.Tx) error {
		s := w.s
		finished := orNow(a.Finished)
		if _, err := s.prep(tx).ExecContext(ctx, s.q(`UPDATE steps SET state = ?, result = ?, summary = ?, finished = ?
			WHERE build_id = ? AND state <> ?`),
			drover.StepFinished, a.Result, a.StepSummary, dbTime(finished), id, drover.StepFinished); err != nil {
			return fmt.Errorf("end steps: %w", err)
		}
		for i := range a.Logs {
			l := a.Logs[i]
			if l.BuildID != id {
				return drover.Errorf(drover.Invalid, "log %d is of build %d, not %d", l.ID, l.BuildID, id)
			}
			l.Complete = true
			if err := s.updateLog(ctx, tx, &l); err != nil {
				return err
			}
		}
		return s.finishBuild(ctx, tx, id, a.Result, a.Summary, finished, a.Requeue)
	})
	if err != nil {
		return fmt.Errorf("abandon build %d: %w", id, err)
	}
	return nil
}
