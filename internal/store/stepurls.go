package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/drover-ci/drover"
)

// SetStepURL adds or replaces one link of a step, in one transaction. The
// first statement writes the row unchanged so that it is locked (on
// PostgreSQL) before it is read: two links added at once both survive.
func (w buildWriter) SetStepURL(ctx context.Context, buildID int64, step int, name, url string) error {
	if err := drover.CheckStepURL(name, url); err != nil {
		return fmt.Errorf("set url of step %d of build %d: %w", step, buildID, err)
	}
	s := w.s
	err := w.inTx(ctx, buildID, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE steps SET urls = urls WHERE build_id = ? AND idx = ?`), buildID, step)
		if err != nil {
			return fmt.Errorf("lock step: %w", err)
		}
		if err := mustAffect(res, func() error {
			return drover.Errorf(drover.NotFound, "step %d of build %d not found", step, buildID)
		}); err != nil {
			return err
		}
		var urls map[string]string
		if err := tx.QueryRowContext(ctx, s.q(`SELECT urls FROM steps WHERE build_id = ? AND idx = ?`), buildID, step).Scan(scanJSON{&urls}); err != nil {
			return fmt.Errorf("read urls: %w", err)
		}
		if urls[name] == url {
			return nil
		}
		if _, replace := urls[name]; !replace && len(urls) >= drover.MaxStepURLs {
			return drover.Errorf(drover.Invalid, "step already has %d links, the most it may have", len(urls))
		}
		if urls == nil {
			urls = make(map[string]string, 1)
		}
		urls[name] = url
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE steps SET urls = ? WHERE build_id = ? AND idx = ?`), jsonMap(urls), buildID, step); err != nil {
			return fmt.Errorf("write urls: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set url %q of step %d of build %d: %w", name, step, buildID, err)
	}
	return nil
}
