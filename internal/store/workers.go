package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/drover-ci/drover"
)

// This file holds workers and tokens.

// workerColumns are written by UpsertWorker (and Enroll); the override
// columns only by SetAvailabilityOverride, and approval is set when the
// row is made (and by Enroll) and afterwards only by SetApproval, so a
// worker's reconnection never clears what an operator or an admin set.
const workerColumns = `name, facts, labels, version, os, arch, availability, connected,
	first_seen, last_seen, connected_at, address, availability_reason, approval, master`

const workerReadColumns = workerColumns + `, override_availability, override_reason, override_by, override_at`

func scanWorker(r scanner) (drover.Worker, error) {
	var w drover.Worker
	var first, last, connAt, overAt dbTime
	var over drover.AvailabilityOverride
	err := r.Scan(&w.Name, scanJSON{&w.Facts}, scanJSON{&w.Labels}, &w.Version, &w.OS, &w.Arch,
		&w.Availability, &w.Connected, &first, &last, &connAt, &w.Address, &w.AvailabilityReason, &w.Approval,
		&w.Master, &over.Availability, &over.Reason, &over.By, &overAt)
	w.FirstSeen, w.LastSeen, w.ConnectedAt = time.Time(first), time.Time(last), time.Time(connAt)
	if over.Availability != "" {
		over.At = time.Time(overAt)
		w.Override = &over
	}
	return w, err
}

// SetAvailabilityOverride sets (or, with o nil, clears) an operator's
// availability for worker name. It fails with NotFound for an unknown
// worker.
func (s *DB) SetAvailabilityOverride(ctx context.Context, name string, o *drover.AvailabilityOverride) error {
	q, err := s.writer()
	if err != nil {
		return err
	}
	var a drover.Availability
	var reason, by string
	var at dbTime
	if o != nil {
		if _, err := drover.ParseAvailability(string(o.Availability)); err != nil {
			return fmt.Errorf("set availability of %s: %w", name, err)
		}
		a, reason, by, at = o.Availability, o.Reason, o.By, dbTime(orNow(o.At))
	}
	res, err := q.ExecContext(ctx, s.q(`UPDATE workers SET override_availability = ?, override_reason = ?,
		override_by = ?, override_at = ? WHERE name = ?`), string(a), reason, by, at, name)
	if err != nil {
		return fmt.Errorf("set availability of %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return drover.Errorf(drover.NotFound, "worker %s not found", name)
	}
	return nil
}

// UpsertWorker stores w by name, keeping FirstSeen of an existing row. A
// new row's zero FirstSeen becomes now, and an empty Availability becomes
// eager. w.Master is stored as given. w.FirstSeen is set to the stored
// value.
func (s *DB) UpsertWorker(ctx context.Context, w *drover.Worker) error {
	q, err := s.writer()
	if err != nil {
		return err
	}
	if err := s.upsertWorker(ctx, q, w, false); err != nil {
		return fmt.Errorf("upsert worker: %w", err)
	}
	return nil
}

// upsertWorker stores w. w.Approval ("" is approved) applies to a new row;
// an existing row keeps its approval unless setApproval is set, which
// Enroll does: a machine that enrolls under a name whose tokens were all
// revoked is a new machine, and must be approved afresh. w.Approval is set
// to the stored value.
func (s *DB) upsertWorker(ctx context.Context, q queryer, w *drover.Worker, setApproval bool) error {
	if w == nil || w.Name == "" {
		return drover.Errorf(drover.Invalid, "a worker needs a name")
	}
	avail := w.Availability
	if avail == "" {
		avail = drover.Eager
	}
	approval, err := drover.ParseApproval(w.Approval)
	if err != nil {
		return fmt.Errorf("store worker %s: %w", w.Name, err)
	}
	onConflict := ""
	if setApproval {
		onConflict = `, approval = excluded.approval`
	}
	var first dbTime
	var stored string
	err = q.QueryRowContext(ctx, s.q(`INSERT INTO workers (`+workerColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET
			facts = excluded.facts, labels = excluded.labels, version = excluded.version,
			os = excluded.os, arch = excluded.arch, availability = excluded.availability,
			availability_reason = excluded.availability_reason,
			connected = excluded.connected, last_seen = excluded.last_seen,
			connected_at = excluded.connected_at, address = excluded.address,
			master = excluded.master`+onConflict+`
		RETURNING first_seen, approval`),
		w.Name, jsonMap(w.Facts), jsonMap(w.Labels), w.Version, w.OS, w.Arch, avail, w.Connected,
		dbTime(orNow(w.FirstSeen)), dbTime(w.LastSeen), dbTime(w.ConnectedAt), w.Address, w.AvailabilityReason,
		approval, w.Master).Scan(&first, &stored)
	if err != nil {
		return fmt.Errorf("store worker %s: %w", w.Name, err)
	}
	w.Availability, w.FirstSeen, w.Approval = avail, time.Time(first), stored
	return nil
}

// SetApproval records an admin's verdict on worker name: approval is
// approved, pending or rejected, by names the admin and at the time. It
// fails with Invalid for another word and NotFound for an unknown worker.
func (s *DB) SetApproval(ctx context.Context, name, approval, by string, at time.Time) error {
	if approval == "" {
		return drover.Errorf(drover.Invalid, "set approval of %s: approval is empty", name)
	}
	if _, err := drover.ParseApproval(approval); err != nil {
		return fmt.Errorf("set approval of %s: %w", name, err)
	}
	q, err := s.writer()
	if err != nil {
		return err
	}
	res, err := q.ExecContext(ctx, s.q(`UPDATE workers SET approval = ?, approval_by = ?, approval_at = ? WHERE name = ?`),
		approval, by, dbTime(orNow(at)), name)
	if err == nil {
		err = mustAffect(res, func() error { return drover.Errorf(drover.NotFound, "worker %s not found", name) })
	}
	if err != nil {
		return fmt.Errorf("set approval of %s: %w", name, err)
	}
	return nil
}

// GetWorker returns worker name, or a NotFound error.
func (s *DB) GetWorker(ctx context.Context, name string) (*drover.Worker, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	w, err := scanWorker(r.QueryRowContext(ctx, s.q(`SELECT `+workerReadColumns+` FROM workers WHERE name = ?`), name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, drover.Errorf(drover.NotFound, "worker %s not found", name)
	}
	if err != nil {
		return nil, fmt.Errorf("get worker %s: %w", name, err)
	}
	return &w, nil
}

// ListWorkers returns every worker by name.
func (s *DB) ListWorkers(ctx context.Context) ([]drover.Worker, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	ws, err := collect(ctx, r, s.q(`SELECT `+workerReadColumns+` FROM workers ORDER BY name`), nil, scanWorker)
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	return ws, nil
}

// MarkDisconnected sets disconnected, clearing ConnectedAt, the workers
// of master (those whose Master is master) and those of no master (rows
// from before sites, and workers stored without one), since no session
// survives a master's restart. Other masters' workers are left alone:
// their sessions live on.
func (s *DB) MarkDisconnected(ctx context.Context, master string) error {
	w, err := s.writer()
	if err != nil {
		return err
	}
	if _, err := w.ExecContext(ctx, s.q(`UPDATE workers SET connected = ?, connected_at = NULL
		WHERE (master = ? OR master = '') AND (connected = ? OR connected_at IS NOT NULL)`),
		false, master, true); err != nil {
		return fmt.Errorf("mark workers of master %q disconnected: %w", master, err)
	}
	return nil
}

const tokenColumns = `id, kind, hash, role, worker, comment, created, expires, uses_left, last_used, revoked`

func scanToken(r scanner) (drover.Token, error) {
	var t drover.Token
	var created, expires, lastUsed dbTime
	err := r.Scan(&t.ID, &t.Kind, &t.Hash, &t.Role, &t.Worker, &t.Comment, &created, &expires,
		&t.UsesLeft, &lastUsed, &t.Revoked)
	t.Created, t.Expires, t.LastUsed = time.Time(created), time.Time(expires), time.Time(lastUsed)
	return t, err
}

// AddToken stores t (its Hash, never its secret). A zero Created becomes
// now. It fails with Conflict when a token with t.ID exists.
func (s *DB) AddToken(ctx context.Context, t *drover.Token) error {
	q, err := s.writer()
	if err != nil {
		return err
	}
	if err := s.addToken(ctx, q, t); err != nil {
		return fmt.Errorf("add token: %w", err)
	}
	return nil
}

func (s *DB) addToken(ctx context.Context, q queryer, t *drover.Token) error {
	if t == nil || t.ID == "" || t.Hash == "" {
		return drover.Errorf(drover.Invalid, "a token needs an ID and a hash")
	}
	switch t.Kind {
	case drover.TokenAPI, drover.TokenEnroll, drover.TokenWorker:
	default:
		return drover.Errorf(drover.Invalid, "token %s has unknown kind %q", t.ID, t.Kind)
	}
	created := orNow(t.Created)
	_, err := q.ExecContext(ctx, s.q(`INSERT INTO tokens (`+tokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		t.ID, t.Kind, t.Hash, t.Role, t.Worker, t.Comment, dbTime(created), dbTime(t.Expires),
		t.UsesLeft, dbTime(t.LastUsed), t.Revoked)
	if s.d.isUnique(err) {
		return drover.Errorf(drover.Conflict, "token %s already exists", t.ID)
	}
	if err != nil {
		return fmt.Errorf("store token %s: %w", t.ID, err)
	}
	t.Created = created
	return nil
}

// GetToken returns token id, hash included, or a NotFound error.
func (s *DB) GetToken(ctx context.Context, id string) (*drover.Token, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	t, err := scanToken(r.QueryRowContext(ctx, s.q(`SELECT `+tokenColumns+` FROM tokens WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, drover.Errorf(drover.NotFound, "token %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get token %s: %w", id, err)
	}
	return &t, nil
}

// ListTokens returns tokens of a kind (all kinds when kind is ""), oldest
// first.
func (s *DB) ListTokens(ctx context.Context, kind drover.TokenKind) ([]drover.Token, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	query, args := `SELECT `+tokenColumns+` FROM tokens`, []any(nil)
	if kind != "" {
		query, args = query+` WHERE kind = ?`, append(args, kind)
	}
	ts, err := collect(ctx, r, s.q(query+` ORDER BY created, id`), args, scanToken)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// UseToken records one use of token id at time at (see Store). An unknown
// token fails with Unauthorized too: to a caller presenting it, it is a
// bad credential like any other.
func (s *DB) UseToken(ctx context.Context, id string, at time.Time) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error { return s.useToken(ctx, tx, id, "", at) })
	if err != nil {
		return fmt.Errorf("use token: %w", err)
	}
	return nil
}

// useToken spends one use of token id, which must be of kind when kind is
// set. The conditions are in the UPDATE itself, so that two uses racing
// for the last one cannot both win on any engine.
func (s *DB) useToken(ctx context.Context, q queryer, id string, kind drover.TokenKind, at time.Time) error {
	if at.IsZero() {
		at = time.Now()
	}
	res, err := q.ExecContext(ctx, s.q(`UPDATE tokens SET last_used = ?,
			uses_left = CASE WHEN uses_left > 0 THEN uses_left - 1 ELSE uses_left END
		WHERE id = ? AND revoked = ? AND uses_left <> 0 AND (expires IS NULL OR expires > ?)
			AND (kind = ? OR ? = '')`),
		dbTime(at), id, false, dbTime(at), kind, kind)
	if err != nil {
		return fmt.Errorf("spend token %s: %w", id, err)
	}
	return mustAffect(res, func() error { return s.tokenRefused(ctx, q, id, kind, at) })
}

// tokenRefused explains why token id could not be used at at.
func (s *DB) tokenRefused(ctx context.Context, q queryer, id string, kind drover.TokenKind, at time.Time) error {
	t, err := scanToken(q.QueryRowContext(ctx, s.q(`SELECT `+tokenColumns+` FROM tokens WHERE id = ?`), id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return drover.Errorf(drover.Unauthorized, "unknown token %s", id)
	case err != nil:
		return fmt.Errorf("read token %s: %w", id, err)
	case kind != "" && t.Kind != kind:
		return drover.Errorf(drover.Unauthorized, "token %s is not an %s token", id, kind)
	case t.Revoked:
		return drover.Errorf(drover.Unauthorized, "token %s is revoked", id)
	case !t.Expires.IsZero() && !at.Before(t.Expires):
		return drover.Errorf(drover.Unauthorized, "token %s expired at %s", id, t.Expires.Format(time.RFC3339))
	case t.UsesLeft == 0:
		return drover.Errorf(drover.Unauthorized, "token %s has no uses left", id)
	}
	return drover.Errorf(drover.Unauthorized, "token %s refused", id)
}

// RevokeToken marks token id revoked; revoking it again is harmless. It
// fails with NotFound for an unknown token.
func (s *DB) RevokeToken(ctx context.Context, id string) error {
	w, err := s.writer()
	if err != nil {
		return err
	}
	res, err := w.ExecContext(ctx, s.q(`UPDATE tokens SET revoked = ? WHERE id = ?`), true, id)
	if err == nil {
		err = mustAffect(res, func() error { return drover.Errorf(drover.NotFound, "token %s not found", id) })
	}
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	return nil
}

// Enroll, in one transaction, spends a use of enrollment token enrollID
// (which must be of kind enroll), stores worker token wt and upserts
// worker w: all of it or nothing. wt's empty Kind becomes worker and its
// empty Worker becomes w.Name; a wt for another worker is Invalid.
func (s *DB) Enroll(ctx context.Context, enrollID string, at time.Time, wt *drover.Token, w *drover.Worker) error {
	if wt == nil || w == nil || w.Name == "" {
		return drover.Errorf(drover.Invalid, "enroll: need a worker token and a named worker")
	}
	tok, wk := *wt, *w
	if tok.Kind == "" {
		tok.Kind = drover.TokenWorker
	}
	if tok.Kind != drover.TokenWorker {
		return drover.Errorf(drover.Invalid, "enroll %s: new token must be a worker token, not %s", w.Name, tok.Kind)
	}
	if tok.Worker == "" {
		tok.Worker = w.Name
	}
	if tok.Worker != w.Name {
		return drover.Errorf(drover.Invalid, "enroll %s: new token is for worker %s", w.Name, tok.Worker)
	}
	if tok.Created.IsZero() && !at.IsZero() {
		tok.Created = at
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.useToken(ctx, tx, enrollID, drover.TokenEnroll, at); err != nil {
			return err
		}
		if err := s.addToken(ctx, tx, &tok); err != nil {
			return err
		}
		return s.upsertWorker(ctx, tx, &wk, true)
	})
	if err != nil {
		return fmt.Errorf("enroll worker %s: %w", w.Name, err)
	}
	*wt, *w = tok, wk
	return nil
}
