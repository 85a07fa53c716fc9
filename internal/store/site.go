package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/drover-ci/drover"
)

// This file holds the site: the masters sharing a database, the builds
// they hand over, and the notices they send each other.

const masterColumns = `id, url, workers_addr, version, started, heartbeat`

func scanMaster(r scanner) (drover.Master, error) {
	var m drover.Master
	var started, beat dbTime
	var since int64
	err := r.Scan(&m.ID, &m.URL, &m.WorkersAddr, &m.Version, &started, &beat, &since)
	m.Started, m.Heartbeat, m.SinceBeat = time.Time(started), time.Time(beat), time.Duration(max(0, since))
	return m, err
}

// Heartbeat records master m by ID, replacing every field of an existing
// record. A zero Heartbeat is taken by the database's clock, as every
// master's is, so that liveness never compares two machines' clocks; a
// set one (a test's) is stored as given. A zero Started is the same
// time. m gets the stored values. A master without an ID is Invalid.
func (s *DB) Heartbeat(ctx context.Context, m *drover.Master) error {
	if m == nil || m.ID == "" {
		return drover.Errorf(drover.Invalid, "heartbeat: a master needs an ID")
	}
	w, err := s.writer()
	if err != nil {
		return err
	}
	// The row's values are computed in a SELECT, so that started can
	// default to the very heartbeat the database took. Arguments go in
	// the order their placeholders appear.
	var args []any
	started := "heartbeat"
	if !m.Started.IsZero() {
		started = "CAST(? AS BIGINT)"
		args = append(args, dbTime(m.Started))
	}
	args = append(args, m.ID, m.URL, m.WorkersAddr, m.Version)
	beat := s.d.nowNanos
	if !m.Heartbeat.IsZero() {
		beat = "CAST(? AS BIGINT)"
		args = append(args, dbTime(m.Heartbeat))
	}
	var gotStarted, gotBeat dbTime
	// "WHERE true" tells SQLite's parser that ON CONFLICT belongs to the
	// INSERT, not to a join.
	err = w.QueryRowContext(ctx, s.q(`INSERT INTO masters (`+masterColumns+`)
		SELECT id, url, workers_addr, version, `+started+`, heartbeat FROM (
			SELECT ? AS id, ? AS url, ? AS workers_addr, ? AS version, `+beat+` AS heartbeat) AS v WHERE true
		ON CONFLICT (id) DO UPDATE SET url = excluded.url, workers_addr = excluded.workers_addr,
			version = excluded.version, started = excluded.started, heartbeat = excluded.heartbeat
		RETURNING started, heartbeat`), args...).Scan(&gotStarted, &gotBeat)
	if err != nil {
		return fmt.Errorf("heartbeat of master %s: %w", m.ID, err)
	}
	m.Started, m.Heartbeat = time.Time(gotStarted), time.Time(gotBeat)
	return nil
}

// ListMasters returns every recorded master by ID.
func (s *DB) ListMasters(ctx context.Context) ([]drover.Master, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	ms, err := collect(ctx, r, `SELECT `+masterColumns+`, `+s.d.nowNanos+` - heartbeat FROM masters ORDER BY id`, nil, scanMaster)
	if err != nil {
		return nil, fmt.Errorf("list masters: %w", err)
	}
	return ms, nil
}

// RemoveMaster deletes master id's record, if there is one.
func (s *DB) RemoveMaster(ctx context.Context, id string) error {
	w, err := s.writer()
	if err != nil {
		return err
	}
	if _, err := w.ExecContext(ctx, s.q(`DELETE FROM masters WHERE id = ?`), id); err != nil {
		return fmt.Errorf("remove master %s: %w", id, err)
	}
	return nil
}

// AdoptBuild hands running build id from master from to master to (see
// Store). The conditions are in the UPDATE itself, so that of masters
// racing for the build exactly one changes it, on any engine: on
// PostgreSQL the others wait for its row lock and then find the master
// changed; on SQLite the write lock serializes them.
func (s *DB) AdoptBuild(ctx context.Context, id int64, from, to string) (bool, error) {
	w, err := s.writer()
	if err != nil {
		return false, err
	}
	res, err := w.ExecContext(ctx, s.q(`UPDATE builds SET master = ? WHERE id = ? AND master = ? AND state = ?`),
		to, id, from, drover.BuildRunning)
	if err != nil {
		return false, fmt.Errorf("adopt build %d from master %q: %w", id, from, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("adopt build %d from master %q: %w", id, from, err)
	}
	return n > 0, nil
}

// MaxNotifyPayload is the size limit of a notice's payload, in bytes:
// PostgreSQL's NOTIFY refuses payloads from 8000 bytes, and the rest is
// a margin for its own bookkeeping.
const MaxNotifyPayload = 7900

// noticeChannel names the NOTIFY channel of the site whose tables are in
// database db, schema schema. Channels are database-wide, not per schema,
// so two sites sharing a database in different schemas (as the tests do)
// each get their own; a hash keeps the name a short identifier.
func noticeChannel(db, schema string) string {
	sum := sha256.Sum256([]byte(db + "\x00" + schema))
	return "drover_" + hex.EncodeToString(sum[:8])
}

// siteChannel is the channel of the site this store belongs to, asked of
// the server once.
func (s *DB) siteChannel(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (string, error) {
	s.chanMu.Lock()
	defer s.chanMu.Unlock()
	if s.channel != "" {
		return s.channel, nil
	}
	var db, schema string
	if err := q.QueryRowContext(ctx, `SELECT current_database(), current_schema()`).Scan(&db, &schema); err != nil {
		return "", fmt.Errorf("site channel: %w", err)
	}
	s.channel = noticeChannel(db, schema)
	return s.channel, nil
}

// Notify sends payload to every Listen on the database (see Store). On an
// engine with one master per database (SQLite) there is no one else to
// tell, and it only checks the payload.
func (s *DB) Notify(ctx context.Context, payload []byte) error {
	switch {
	case len(payload) > MaxNotifyPayload:
		return drover.Errorf(drover.Invalid, "notify: payload of %d bytes is over the limit of %d", len(payload), MaxNotifyPayload)
	case !utf8.Valid(payload) || bytes.IndexByte(payload, 0) >= 0:
		return drover.Errorf(drover.Invalid, "notify: payload is not text")
	}
	w, err := s.writer()
	if err != nil {
		return err
	}
	if s.listen == nil {
		return nil
	}
	channel, err := s.siteChannel(ctx, w)
	if err != nil {
		return err
	}
	if _, err := w.ExecContext(ctx, s.q(`SELECT pg_notify(?, ?)`), channel, string(payload)); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// Listen's timings.
const (
	// listenBackoffMin and listenBackoffMax bound the wait before each
	// attempt to connect again after the connection broke or an attempt
	// failed, doubling from one to the other: short after a blip (a
	// killed backend, a restarted server), so that little is missed, and
	// a few seconds apart while the server stays away, so that a
	// site's masters do not hammer it.
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
	// listenConnectTimeout bounds one attempt: connecting (a DSN's
	// connect_timeout bounds the handshake too) and LISTEN.
	listenConnectTimeout = 10 * time.Second
	// listenIdle is how long Listen waits for a notice before it pings
	// the server: a connection whose server vanished without closing it (a
	// network partition, a failover to another host) would otherwise go
	// unnoticed until TCP keepalives give up, tens of minutes later.
	listenIdle = 30 * time.Second
	// listenPingTimeout bounds that ping.
	listenPingTimeout = 5 * time.Second
	// listenCloseTimeout bounds saying goodbye on a connection Listen
	// is done with.
	listenCloseTimeout = time.Second
)

// Listen calls fn with every notice's payload until ctx is done (see
// Store). It logs nothing: a broken connection is reported to the caller
// by lost, once it is mended.
func (s *DB) Listen(ctx context.Context, fn func(payload []byte), lost func()) error {
	if s.closed.Load() {
		return s.errClosed()
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	ended := func() error {
		if parent.Err() == nil {
			return s.errClosed()
		}
		return nil
	}

	if s.listen == nil {
		<-ctx.Done()
		return ended()
	}
	var (
		wait   time.Duration // before the next attempt; none before the first
		missed bool          // notices may have been sent while not listening
	)
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ended()
			case <-t.C:
			}
		}
		conn, channel, err := s.listenConn(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ended()
			}
			missed = true
			wait = min(max(2*wait, listenBackoffMin), listenBackoffMax)
			continue
		}
		if missed {
			lost()
		}
		receive(ctx, conn, channel, fn)
		closeCtx, cancelClose := context.WithTimeout(context.Background(), listenCloseTimeout)
		conn.Close(closeCtx)
		cancelClose()
		if ctx.Err() != nil {
			return ended()
		}
		missed, wait = true, listenBackoffMin
	}
}

// listenConn connects to the database and listens on the site's channel.
func (s *DB) listenConn(ctx context.Context) (*pgx.Conn, string, error) {
	ctx, cancel := context.WithTimeout(ctx, listenConnectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, s.listen)
	if err != nil {
		return nil, "", err
	}
	var db, schema string
	if err := conn.QueryRow(ctx, `SELECT current_database(), current_schema()`).Scan(&db, &schema); err != nil {
		conn.Close(ctx)
		return nil, "", err
	}
	channel := noticeChannel(db, schema)
	if _, err := conn.Exec(ctx, `LISTEN `+channel); err != nil {
		conn.Close(ctx)
		return nil, "", err
	}
	return conn, channel, nil
}

// receive calls fn with each notice that arrives on conn until ctx is
// done or conn breaks. A conn quiet for listenIdle must answer a ping.
func receive(ctx context.Context, conn *pgx.Conn, channel string, fn func(payload []byte)) {
	for {
		waitCtx, cancel := context.WithTimeout(ctx, listenIdle)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			if n != nil && n.Channel == channel {
				fn([]byte(n.Payload))
			}
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pingCtx, cancel := context.WithTimeout(ctx, listenPingTimeout)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return
			}
		default:
			return
		}
	}
}
