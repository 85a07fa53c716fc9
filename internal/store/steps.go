package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/drover-ci/drover"
)

// This file holds steps and the log index.

const stepColumns = `build_id, idx, name, state, result, summary, exit_code, started, finished, parts, urls`

func scanStep(r scanner) (drover.Step, error) {
	var st drover.Step
	var exit sql.NullInt64
	var started, finished dbTime
	err := r.Scan(&st.BuildID, &st.Index, &st.Name, &st.State, &st.Result, &st.Summary, &exit, &started, &finished, scanJSON{&st.Parts}, scanJSON{&st.URLs})
	if exit.Valid {
		code := int(exit.Int64)
		st.ExitCode = &code
	}
	st.Started, st.Finished = time.Time(started), time.Time(finished)
	return st, err
}

func exitArg(code *int) any {
	if code == nil {
		return nil
	}
	return *code
}

// AddSteps stores the steps of a build as it starts, all or none. It fails
// with NotFound when a step's build does not exist and Conflict when a
// step with the same (BuildID, Index) is already stored.
func (w buildWriter) AddSteps(ctx context.Context, steps []drover.Step) error {
	if len(steps) == 0 {
		return nil
	}
	if err := w.inTx(ctx, steps[0].BuildID, func(tx *sql.Tx) error { return w.s.addStepsTx(ctx, tx, steps) }); err != nil {
		return fmt.Errorf("add steps: %w", err)
	}
	return nil
}

// addStepsTx is AddSteps within tx.
func (s *DB) addStepsTx(ctx context.Context, tx *sql.Tx, steps []drover.Step) error {
	q := s.prep(tx)
	checked := map[int64]bool{}
	for _, st := range steps {
		if !checked[st.BuildID] {
			// Checked up front for a clear NotFound; the foreign
			// key would refuse the row anyway.
			var n int
			if err := q.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM builds WHERE id = ?`), st.BuildID).Scan(&n); err != nil {
				return fmt.Errorf("check build %d: %w", st.BuildID, err)
			}
			if n == 0 {
				return drover.Errorf(drover.NotFound, "build %d not found", st.BuildID)
			}
			checked[st.BuildID] = true
		}
		if st.Index < 0 {
			return drover.Errorf(drover.Invalid, "step %q of build %d has negative index %d", st.Name, st.BuildID, st.Index)
		}
		state := st.State
		if state == "" {
			state = drover.StepPending
		}
		_, err := q.ExecContext(ctx, s.q(`INSERT INTO steps (`+stepColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			st.BuildID, st.Index, st.Name, state, st.Result, st.Summary, exitArg(st.ExitCode),
			dbTime(st.Started), dbTime(st.Finished), jsonSlice(st.Parts), jsonMap(st.URLs))
		if s.d.isUnique(err) {
			return drover.Errorf(drover.Conflict, "build %d already has a step %d", st.BuildID, st.Index)
		}
		if err != nil {
			return fmt.Errorf("insert step %d of build %d: %w", st.Index, st.BuildID, err)
		}
	}
	return nil
}

// UpdateStep stores s, found by (BuildID, Index); NotFound if there is
// no such step.
func (w buildWriter) UpdateStep(ctx context.Context, st *drover.Step) error {
	if st == nil {
		return drover.Errorf(drover.Invalid, "update step: no step")
	}
	return w.inTx(ctx, st.BuildID, func(tx *sql.Tx) error { return w.s.updateStep(ctx, tx, st) })
}

// updateStep is UpdateStep on q.
func (s *DB) updateStep(ctx context.Context, q queryer, st *drover.Step) error {
	res, err := s.prep(q).ExecContext(ctx, s.q(`UPDATE steps SET name = ?, state = ?, result = ?, summary = ?,
		exit_code = ?, started = ?, finished = ?, parts = ?, urls = ? WHERE build_id = ? AND idx = ?`),
		st.Name, st.State, st.Result, st.Summary, exitArg(st.ExitCode), dbTime(st.Started), dbTime(st.Finished),
		jsonSlice(st.Parts), jsonMap(st.URLs), st.BuildID, st.Index)
	if err == nil {
		err = mustAffect(res, func() error {
			return drover.Errorf(drover.NotFound, "step %d of build %d not found", st.Index, st.BuildID)
		})
	}
	if err != nil {
		return fmt.Errorf("update step %d of build %d: %w", st.Index, st.BuildID, err)
	}
	return nil
}

// ListSteps returns a build's steps in order of Index; none for an
// unknown build.
func (s *DB) ListSteps(ctx context.Context, buildID int64) ([]drover.Step, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	steps, err := collect(ctx, r, s.q(`SELECT `+stepColumns+` FROM steps WHERE build_id = ? ORDER BY idx`),
		[]any{buildID}, scanStep)
	if err != nil {
		return nil, fmt.Errorf("list steps of build %d: %w", buildID, err)
	}
	return steps, nil
}

const logColumns = `id, build_id, step, name, bytes, dropped, complete, seq, seq_bytes`

func scanLog(r scanner) (drover.Log, error) {
	var l drover.Log
	var seq int64
	err := r.Scan(&l.ID, &l.BuildID, &l.StepIndex, &l.Name, &l.Bytes, &l.Dropped, &l.Complete, &seq, &l.SeqBytes)
	l.Seq = uint64(seq)
	return l, err
}

// SetLogProgress records, in one transaction, how far each log's command
// output is stored. Unknown logs are skipped (a log expired meanwhile); a
// log of a build another master drives fails the whole transaction.
func (w buildWriter) SetLogProgress(ctx context.Context, progress []drover.Log) error {
	if len(progress) == 0 {
		return nil
	}
	s := w.s
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		guarded := map[int64]bool{}
		for _, p := range progress {
			var build int64
			err := s.prep(tx).QueryRowContext(ctx, s.q(`SELECT build_id FROM logs WHERE id = ?`), p.ID).Scan(&build)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("log %d: %w", p.ID, err)
			}
			if !guarded[build] {
				if err := w.guard(ctx, tx, build); err != nil {
					return err
				}
				guarded[build] = true
			}
			if _, err := s.prep(tx).ExecContext(ctx, s.q(`UPDATE logs SET seq = ?, seq_bytes = ? WHERE id = ?`),
				int64(p.Seq), p.SeqBytes, p.ID); err != nil {
				return fmt.Errorf("log %d: %w", p.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set log progress: %w", err)
	}
	return nil
}

// AddLog stores a log index entry and sets l.ID. It fails with NotFound
// when the log's build does not exist.
func (w buildWriter) AddLog(ctx context.Context, l *drover.Log) error {
	if l == nil || l.Name == "" {
		return drover.Errorf(drover.Invalid, "add log: a log needs a name")
	}
	return w.inTx(ctx, l.BuildID, func(tx *sql.Tx) error { return w.s.addLog(ctx, tx, l) })
}

// addLog is AddLog on q, for a log with a name.
func (s *DB) addLog(ctx context.Context, q queryer, l *drover.Log) error {
	var id int64
	err := s.prep(q).QueryRowContext(ctx, s.q(`INSERT INTO logs (build_id, step, name, bytes, dropped, complete)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING id`),
		l.BuildID, l.StepIndex, l.Name, l.Bytes, l.Dropped, l.Complete).Scan(&id)
	if s.d.isForeignKey(err) {
		return drover.Errorf(drover.NotFound, "add log %q: build %d not found", l.Name, l.BuildID)
	}
	if err != nil {
		return fmt.Errorf("add log %q of build %d step %d: %w", l.Name, l.BuildID, l.StepIndex, err)
	}
	l.ID = id
	return nil
}

// UpdateLog stores l's Bytes, Dropped and Complete; NotFound if there is
// no log l.ID.
func (w buildWriter) UpdateLog(ctx context.Context, l *drover.Log) error {
	if l == nil {
		return drover.Errorf(drover.Invalid, "update log: no log")
	}
	return w.s.inTx(ctx, func(tx *sql.Tx) error {
		// The build is the log's own, whatever l says.
		var build int64
		err := w.s.prep(tx).QueryRowContext(ctx, w.s.q(`SELECT build_id FROM logs WHERE id = ?`), l.ID).Scan(&build)
		if errors.Is(err, sql.ErrNoRows) {
			return drover.Errorf(drover.NotFound, "log %d not found", l.ID)
		}
		if err != nil {
			return fmt.Errorf("update log %d: %w", l.ID, err)
		}
		if err := w.guard(ctx, tx, build); err != nil {
			return err
		}
		return w.s.updateLog(ctx, tx, l)
	})
}

// updateLog is UpdateLog on q.
func (s *DB) updateLog(ctx context.Context, q queryer, l *drover.Log) error {
	res, err := s.prep(q).ExecContext(ctx, s.q(`UPDATE logs SET bytes = ?, dropped = ?, complete = ? WHERE id = ?`),
		l.Bytes, l.Dropped, l.Complete, l.ID)
	if err == nil {
		err = mustAffect(res, func() error { return drover.Errorf(drover.NotFound, "log %d not found", l.ID) })
	}
	if err != nil {
		return fmt.Errorf("update log %d: %w", l.ID, err)
	}
	return nil
}

// BuildStart is what a build stores as it starts (see StartBuild).
type BuildStart struct {
	Properties drover.Properties
	Steps      []drover.Step
	// First, when not nil, is the first step's log, which gets its ID.
	First *drover.Log
}

// StartBuild, in one transaction, replaces the properties of running
// build id (as SetBuildProperties does), stores its steps (as AddSteps
// does; a step may be stored already running) and, when first is not
// nil, adds first to the log index (as AddLog does, setting first.ID).
// It changes nothing if any part fails; the errors are those of the
// three parts.
func (w buildWriter) StartBuild(ctx context.Context, id int64, props drover.Properties, steps []drover.Step, first *drover.Log) error {
	start := &BuildStart{Properties: props, Steps: steps}
	if first != nil {
		l := *first
		start.First = &l
	}
	if err := w.inTx(ctx, id, func(tx *sql.Tx) error { return w.s.startTx(ctx, tx, id, start) }); err != nil {
		return fmt.Errorf("start build %d: %w", id, err)
	}
	if first != nil {
		first.ID = start.First.ID
	}
	return nil
}

// startTx is StartBuild within tx; it sets start.First.ID.
func (s *DB) startTx(ctx context.Context, tx *sql.Tx, id int64, start *BuildStart) error {
	if start.First != nil && start.First.Name == "" {
		return drover.Errorf(drover.Invalid, "a log needs a name")
	}
	if err := s.setBuildProperties(ctx, tx, id, start.Properties); err != nil {
		return err
	}
	if err := s.addStepsTx(ctx, tx, start.Steps); err != nil {
		return err
	}
	if start.First == nil {
		return nil
	}
	return s.addLog(ctx, tx, start.First)
}

// StartStep, in one transaction, stores st (as UpdateStep does) and adds
// l to the log index for it (as AddLog does, setting l.ID). It changes
// nothing if either fails.
func (w buildWriter) StartStep(ctx context.Context, st *drover.Step, l *drover.Log) error {
	if st == nil || l == nil || l.Name == "" {
		return drover.Errorf(drover.Invalid, "start step: a step and a named log are needed")
	}
	nl := *l
	err := w.inTx(ctx, st.BuildID, func(tx *sql.Tx) error {
		if err := w.s.updateStep(ctx, tx, st); err != nil {
			return err
		}
		return w.s.addLog(ctx, tx, &nl)
	})
	if err != nil {
		return fmt.Errorf("start step: %w", err)
	}
	l.ID = nl.ID
	return nil
}

// FinishStep, in one transaction, stores st (as UpdateStep does) and l's
// Bytes, Dropped and Complete (as UpdateLog does). Either may be nil, for
// a step without a log or a log whose step stays open. It changes
// nothing if either fails.
func (w buildWriter) FinishStep(ctx context.Context, st *drover.Step, l *drover.Log) error {
	var build int64
	switch {
	case st != nil:
		build = st.BuildID
	case l != nil:
		build = l.BuildID
	default:
		return nil
	}
	err := w.inTx(ctx, build, func(tx *sql.Tx) error {
		if l != nil {
			if err := w.s.updateLog(ctx, tx, l); err != nil {
				return err
			}
		}
		if st != nil {
			return w.s.updateStep(ctx, tx, st)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("finish step: %w", err)
	}
	return nil
}

// GetLog returns the index entry of log id, or a NotFound error.
func (s *DB) GetLog(ctx context.Context, id int64) (*drover.Log, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	l, err := scanLog(r.QueryRowContext(ctx, s.q(`SELECT `+logColumns+` FROM logs WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, drover.Errorf(drover.NotFound, "log %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get log %d: %w", id, err)
	}
	return &l, nil
}

// ListLogs returns a build's logs in order of step, then ID.
func (s *DB) ListLogs(ctx context.Context, buildID int64) ([]drover.Log, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	logs, err := collect(ctx, r, s.q(`SELECT `+logColumns+` FROM logs WHERE build_id = ? ORDER BY step, id`),
		[]any{buildID}, scanLog)
	if err != nil {
		return nil, fmt.Errorf("list logs of build %d: %w", buildID, err)
	}
	return logs, nil
}

// ExpiredLogs returns up to limit (default 100) logs of builds that
// finished before t, oldest log first.
func (s *DB) ExpiredLogs(ctx context.Context, before time.Time, limit int) ([]drover.Log, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	logs, err := collect(ctx, r, s.q(`SELECT l.id, l.build_id, l.step, l.name, l.bytes, l.dropped, l.complete, l.seq, l.seq_bytes
		FROM logs l JOIN builds b ON b.id = l.build_id
		WHERE b.finished IS NOT NULL AND b.finished < ?
		ORDER BY l.id LIMIT ?`),
		[]any{dbTime(before), limitOr(limit, defaultLimit)}, scanLog)
	if err != nil {
		return nil, fmt.Errorf("list logs expired before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return logs, nil
}

// deleteBatch bounds the IN list of one DELETE, well under every engine's
// limit on bound parameters (SQLite's is 32766, PostgreSQL's 65535).
const deleteBatch = 500

// DeleteLogs removes the index entries of logs whose bytes are gone. IDs
// that are not stored are ignored, so a janitor interrupted midway can run
// again.
func (s *DB) DeleteLogs(ctx context.Context, ids []int64) error {
	return s.deleteByID(ctx, "logs", ids)
}

// deleteByID deletes the rows of table whose id is in ids, in batches of
// deleteBatch within one transaction. table is a constant of the store's.
func (s *DB) deleteByID(ctx context.Context, table string, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for start := 0; start < len(ids); start += deleteBatch {
			batch := ids[start:min(start+deleteBatch, len(ids))]
			args := make([]any, len(batch))
			for i, id := range batch {
				args[i] = id
			}
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM `+table+` WHERE id IN (`+placeholders(len(batch))+`)`), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete %d %s: %w", len(ids), table, err)
	}
	return nil
}
