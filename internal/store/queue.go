package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

// This file holds changes, build requests and builds: the queue and what
// comes out of it.

const changeColumns = `id, repository, branch, revision, author, comments, files, category, properties, at`

func scanChange(r scanner) (drover.Change, error) {
	var c drover.Change
	var at dbTime
	err := r.Scan(&c.ID, &c.Repository, &c.Branch, &c.Revision, &c.Author, &c.Comments,
		scanJSON{&c.Files}, &c.Category, scanJSON{&c.Properties}, &at)
	c.When = time.Time(at)
	return c, err
}

// AddChange stores c and sets c.ID. A zero c.When becomes now.
func (s *DB) AddChange(ctx context.Context, c *drover.Change) error {
	if c == nil {
		return drover.Errorf(drover.Invalid, "add change: no change")
	}
	w, err := s.writer()
	if err != nil {
		return err
	}
	when := orNow(c.When)
	var id int64
	err = w.QueryRowContext(ctx, s.q(`INSERT INTO changes
		(repository, branch, revision, author, comments, files, category, properties, at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		c.Repository, c.Branch, c.Revision, c.Author, c.Comments, jsonSlice(c.Files),
		c.Category, jsonMap(c.Properties), dbTime(when)).Scan(&id)
	if err != nil {
		return fmt.Errorf("add change %s@%s: %w", c.Repository, c.Revision, err)
	}
	c.ID, c.When = id, when
	return nil
}

// GetChange returns change id, or a NotFound error.
func (s *DB) GetChange(ctx context.Context, id int64) (*drover.Change, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	c, err := scanChange(r.QueryRowContext(ctx, s.q(`SELECT `+changeColumns+` FROM changes WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, drover.Errorf(drover.NotFound, "change %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get change %d: %w", id, err)
	}
	return &c, nil
}

// ListChanges returns changes newest first.
func (s *DB) ListChanges(ctx context.Context, f drover.ChangeFilter) ([]drover.Change, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	cs, err := collect(ctx, r, s.q(`SELECT `+changeColumns+` FROM changes ORDER BY id DESC LIMIT ?`),
		[]any{limitOr(f.Limit, defaultLimit)}, scanChange)
	if err != nil {
		return nil, fmt.Errorf("list changes: %w", err)
	}
	return cs, nil
}

const requestColumns = `id, builder, repository, branch, revision, properties, priority, reason,
	change_ids, state, result, submitted, tries, cancel_reason`

func scanRequest(r scanner) (drover.BuildRequest, error) {
	var q drover.BuildRequest
	var submitted dbTime
	err := r.Scan(&q.ID, &q.Builder, &q.Source.Repository, &q.Source.Branch, &q.Source.Revision,
		scanJSON{&q.Properties}, &q.Priority, &q.Reason, scanJSON{&q.ChangeIDs}, &q.State,
		&q.Result, &submitted, &q.Tries, &q.CancelReason)
	q.Submitted = time.Time(submitted)
	return q, err
}

// AddRequests stores reqs in one transaction as pending, setting each ID,
// State, Result, Tries and (when zero) Submitted. It changes none of them
// if it fails.
func (s *DB) AddRequests(ctx context.Context, reqs []*drover.BuildRequest) error {
	for i, r := range reqs {
		if r == nil || r.Builder == "" {
			return drover.Errorf(drover.Invalid, "add requests: request %d names no builder", i)
		}
	}
	ids := make([]int64, len(reqs))
	submitted := make([]time.Time, len(reqs))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for i, r := range reqs {
			submitted[i] = orNow(r.Submitted)
			err := s.prep(tx).QueryRowContext(ctx, s.q(`INSERT INTO build_requests
				(builder, repository, branch, revision, properties, priority, reason, change_ids,
				 state, result, submitted, tries)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, 0) RETURNING id`),
				r.Builder, r.Source.Repository, r.Source.Branch, r.Source.Revision,
				jsonMap(r.Properties), r.Priority, r.Reason, jsonSlice(r.ChangeIDs),
				drover.RequestPending, dbTime(submitted[i])).Scan(&ids[i])
			if err != nil {
				return fmt.Errorf("insert request for %s: %w", r.Builder, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add requests: %w", err)
	}
	for i, r := range reqs {
		r.ID, r.State, r.Result, r.Tries, r.Submitted = ids[i], drover.RequestPending, drover.ResultNone, 0, submitted[i]
	}
	return nil
}

// GetRequest returns build request id, or a NotFound error.
func (s *DB) GetRequest(ctx context.Context, id int64) (*drover.BuildRequest, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	q, err := scanRequest(r.QueryRowContext(ctx, s.q(`SELECT `+requestColumns+` FROM build_requests WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, drover.Errorf(drover.NotFound, "build request %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get build request %d: %w", id, err)
	}
	return &q, nil
}

// ListRequests returns requests in queue order: priority (high first),
// then submission time, then ID.
func (s *DB) ListRequests(ctx context.Context, f drover.RequestFilter) ([]drover.BuildRequest, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	var where []string
	var args []any
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.Builder != "" {
		where, args = append(where, "builder = ?"), append(args, f.Builder)
	}
	query := `SELECT ` + requestColumns + ` FROM build_requests` + whereClause(where) +
		` ORDER BY priority DESC, submitted ASC, id ASC`
	if f.Limit > 0 {
		query, args = query+` LIMIT ?`, append(args, f.Limit)
	}
	reqs, err := collect(ctx, r, s.q(query), args, scanRequest)
	if err != nil {
		return nil, fmt.Errorf("list build requests: %w", err)
	}
	return reqs, nil
}

func whereClause(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// ClaimRequest, in one transaction, moves request id from pending to
// claimed, increments its Tries and creates build b for it. Besides what
// the Store contract lists, a b with no Builder gets the request's (a b
// naming another builder is Invalid), an empty Reason gets the request's,
// a zero Started becomes now, and b.Master is stored as given. b is changed only if the claim succeeds.
func (s *DB) ClaimRequest(ctx context.Context, id int64, b *drover.Build) error {
	if b == nil {
		return drover.Errorf(drover.Invalid, "claim build request %d: no build", id)
	}
	var nb drover.Build
	var err error
	for range claimAttempts {
		nb = *b
		err = s.claimOnce(ctx, id, &nb)
		if !errors.Is(err, errNumberTaken) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("claim build request %d: %w", id, err)
	}
	*b = nb
	return nil
}

// claimAttempts bounds how often ClaimRequest retries when a concurrent
// claim took the build number it chose. Neither engine should need it
// (SQLite's write lock and PostgreSQL's builder lock serialize claims
// for a builder); it covers an engine or a future query without that
// lock, and each retry sees the number the winner took.
const claimAttempts = 3

// errNumberTaken reports that a concurrent claim took the build number
// claimOnce chose, so that ClaimRequest tries again.
var errNumberTaken = errors.New("build number taken by a concurrent claim")

// claimOnce is one attempt of ClaimRequest, filling in nb.
func (s *DB) claimOnce(ctx context.Context, id int64, nb *drover.Build) error {
	return s.inTx(ctx, func(tx *sql.Tx) error { return s.claimTx(ctx, tx, id, nb) })
}

// Claim is one request for ClaimRequests to claim: Request, with Build
// the build to create for it, as ClaimRequest takes them. ClaimRequests
// sets Err.
type Claim struct {
	Request int64
	Build   *drover.Build
	// Start, when set, is called in the transaction with the claimed
	// build (its ID and Number set) and returns what StartBuild would
	// store for it, which is stored with the claim: the build's start
	// costs no transaction of its own. It must only compute; its result
	// is kept in Started (with First.ID set) once the claim commits.
	Start   func(b *drover.Build) *BuildStart
	Started *BuildStart
	// Err is nil when the request was claimed (Build is then filled in as
	// ClaimRequest fills it), else why not: Conflict when it was not
	// pending, NotFound when there is no such request, Invalid for a
	// build naming another builder.
	Err error
}

// ClaimRequests claims several requests in one transaction, each as
// ClaimRequest does (see Store). A claim refused for its own reason (its
// Err is Conflict, NotFound or Invalid) leaves its Build unchanged and
// does not stop the others; any other failure fails the whole call, which
// then claims none of them. Claims are made in order of the builder their
// Build names ("" first), so that masters claiming batches at once take
// builder locks in one order.
func (s *DB) ClaimRequests(ctx context.Context, claims []Claim) error {
	for i := range claims {
		if claims[i].Build == nil {
			return drover.Errorf(drover.Invalid, "claim build requests: claim %d has no build", i)
		}
	}
	if len(claims) == 0 {
		return nil
	}
	order := make([]int, len(claims))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return claims[order[a]].Build.Builder < claims[order[b]].Build.Builder })
	built := make([]drover.Build, len(claims))
	started := make([]*BuildStart, len(claims))
	errs := make([]error, len(claims))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, i := range order {
			built[i] = *claims[i].Build
			errs[i], started[i] = nil, nil
			err := s.claimTx(ctx, tx, claims[i].Request, &built[i])
			if err == nil && claims[i].Start != nil {
				started[i] = claims[i].Start(&built[i])
				if err := s.startTx(ctx, tx, built[i].ID, started[i]); err != nil {
					return fmt.Errorf("start build %d: %w", built[i].ID, err)
				}
			}
			switch k := drover.KindOf(err); {
			case err == nil:
			case (k == drover.Conflict && !errors.Is(err, errNumberTaken)) || k == drover.NotFound || k == drover.Invalid:
				errs[i] = fmt.Errorf("claim build request %d: %w", claims[i].Request, err)
			default:
				// Includes a build number taken by a concurrent claim:
				// on PostgreSQL the failed INSERT has ended the
				// transaction, so the whole batch fails.
				return fmt.Errorf("claim build request %d: %w", claims[i].Request, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("claim %d build requests: %w", len(claims), err)
	}
	for i := range claims {
		claims[i].Err, claims[i].Started = errs[i], nil
		if errs[i] == nil {
			*claims[i].Build = built[i]
			claims[i].Started = started[i]
		}
	}
	return nil
}

// claimTx claims request id and creates build nb for it within tx.
func (s *DB) claimTx(ctx context.Context, tx *sql.Tx, id int64, nb *drover.Build) error {
	q := s.prep(tx)
	// Only a pending row qualifies, and on engines with row locks the
	// row is locked until commit; a row another master has locked is
	// skipped, which reads as "not pending" below.
	req, err := scanRequest(q.QueryRowContext(ctx, s.q(`SELECT `+requestColumns+
		` FROM build_requests WHERE id = ? AND state = ?`+s.d.skipLocked), id, drover.RequestPending))
	if errors.Is(err, sql.ErrNoRows) {
		return s.requestNotPending(ctx, tx, id)
	}
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	switch nb.Builder {
	case "":
		nb.Builder = req.Builder
	case req.Builder:
	default:
		return drover.Errorf(drover.Invalid, "build request %d is for builder %s, not %s", id, req.Builder, nb.Builder)
	}
	if nb.Source == (drover.SourceStamp{}) {
		nb.Source = req.Source
	}
	if len(nb.Properties) == 0 {
		nb.Properties = req.Properties.Clone()
		if len(nb.Properties) == 0 {
			nb.Properties = nil
		}
	}
	if nb.Reason == "" {
		nb.Reason = req.Reason
	}
	nb.RequestID = id
	nb.State = drover.BuildRunning
	nb.Result = drover.ResultNone
	nb.Started = orNow(nb.Started)
	nb.Finished = time.Time{}

	// The write lock (SQLite) or the builder's lock (PostgreSQL)
	// makes max+1 safe: a racing claim for the same builder waits
	// for this one to commit and then reads its number. UNIQUE
	// (builder, number) stays the backstop: should two claims still
	// pick one number, the loser fails with errNumberTaken and
	// ClaimRequest tries again.
	if err := s.lockBuilder(ctx, tx, nb.Builder); err != nil {
		return err
	}
	if err := q.QueryRowContext(ctx, s.q(`SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE builder = ?`),
		nb.Builder).Scan(&nb.Number); err != nil {
		return fmt.Errorf("next build number of %s: %w", nb.Builder, err)
	}
	if _, err := q.ExecContext(ctx, s.q(`UPDATE build_requests SET state = ?, tries = tries + 1 WHERE id = ?`),
		drover.RequestClaimed, id); err != nil {
		return fmt.Errorf("mark claimed: %w", err)
	}
	err = q.QueryRowContext(ctx, s.q(`INSERT INTO builds
		(builder, number, request_id, worker, repository, branch, revision, properties,
		 reason, why_worker, master, state, result, summary, started, finished)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, NULL) RETURNING id`),
		nb.Builder, nb.Number, id, nb.Worker, nb.Source.Repository, nb.Source.Branch, nb.Source.Revision,
		jsonMap(nb.Properties), nb.Reason, nb.WhyWorker, nb.Master, nb.State, nb.Summary, dbTime(nb.Started)).Scan(&nb.ID)
	if s.d.isUnique(err) {
		return drover.Errorf(drover.Conflict, "build %s #%d: %w", nb.Builder, nb.Number, errNumberTaken)
	}
	if err != nil {
		return fmt.Errorf("insert build: %w", err)
	}
	return nil
}

// requestNotPending explains why request id could not be taken as pending.
func (s *DB) requestNotPending(ctx context.Context, q queryer, id int64) error {
	var state drover.RequestState
	err := q.QueryRowContext(ctx, s.q(`SELECT state FROM build_requests WHERE id = ?`), id).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return drover.Errorf(drover.NotFound, "build request %d not found", id)
	}
	if err != nil {
		return fmt.Errorf("read request state: %w", err)
	}
	if state == drover.RequestPending {
		// Locked by another master's claim in flight.
		return drover.Errorf(drover.Conflict, "build request %d is being claimed elsewhere", id)
	}
	return drover.Errorf(drover.Conflict, "build request %d is %s, not pending", id, state)
}

// CancelRequest moves a pending request to cancelled with result
// cancelled, recording reason. It fails with Conflict if the request is
// not pending.
func (s *DB) CancelRequest(ctx context.Context, id int64, reason string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE build_requests SET state = ?, result = ?, cancel_reason = ?
			WHERE id = ? AND state = ?`),
			drover.RequestCancelled, drover.Cancelled, reason, id, drover.RequestPending)
		if err != nil {
			return err
		}
		return mustAffect(res, func() error { return s.requestNotPending(ctx, tx, id) })
	})
	if err != nil {
		return fmt.Errorf("cancel build request %d: %w", id, err)
	}
	return nil
}

const buildColumns = `id, builder, number, request_id, worker, repository, branch, revision, properties,
	reason, why_worker, master, state, result, summary, started, finished`

func scanBuild(r scanner) (drover.Build, error) {
	var b drover.Build
	var started, finished dbTime
	err := r.Scan(&b.ID, &b.Builder, &b.Number, &b.RequestID, &b.Worker,
		&b.Source.Repository, &b.Source.Branch, &b.Source.Revision, scanJSON{&b.Properties},
		&b.Reason, &b.WhyWorker, &b.Master, &b.State, &b.Result, &b.Summary, &started, &finished)
	b.Started, b.Finished = time.Time(started), time.Time(finished)
	return b, err
}

// GetBuild returns build id, or a NotFound error.
func (s *DB) GetBuild(ctx context.Context, id int64) (*drover.Build, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	b, err := scanBuild(r.QueryRowContext(ctx, s.q(`SELECT `+buildColumns+` FROM builds WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, drover.Errorf(drover.NotFound, "build %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get build %d: %w", id, err)
	}
	return &b, nil
}

// GetBuildByNumber returns build number of builder, or a NotFound error.
func (s *DB) GetBuildByNumber(ctx context.Context, builder string, number int) (*drover.Build, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	b, err := scanBuild(r.QueryRowContext(ctx, s.q(`SELECT `+buildColumns+` FROM builds WHERE builder = ? AND number = ?`),
		builder, number))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, drover.Errorf(drover.NotFound, "build %s #%d not found", builder, number)
	}
	if err != nil {
		return nil, fmt.Errorf("get build %s #%d: %w", builder, number, err)
	}
	return &b, nil
}

// ListBuilds returns builds newest first (highest ID first), at most
// f.Limit of them (default 100).
func (s *DB) ListBuilds(ctx context.Context, f drover.BuildFilter) ([]drover.Build, error) {
	r, err := s.reader()
	if err != nil {
		return nil, err
	}
	var where []string
	var args []any
	add := func(cond string, arg any) { where, args = append(where, cond), append(args, arg) }
	if f.Builder != "" {
		add("builder = ?", f.Builder)
	}
	if f.Worker != "" {
		add("worker = ?", f.Worker)
	}
	if f.State != "" {
		add("state = ?", f.State)
	}
	if f.RequestID != 0 {
		add("request_id = ?", f.RequestID)
	}
	if f.Master != "" {
		add("master = ?", f.Master)
	}
	if f.BeforeID != 0 {
		add("id < ?", f.BeforeID)
	}
	query := `SELECT ` + buildColumns + ` FROM builds` + whereClause(where) + ` ORDER BY id DESC LIMIT ?`
	bs, err := collect(ctx, r, s.q(query), append(args, limitOr(f.Limit, defaultLimit)), scanBuild)
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	return bs, nil
}

// SetBuildProperties replaces the properties of a running build. It fails
// with NotFound for an unknown build and Conflict for a finished one.
func (w buildWriter) SetBuildProperties(ctx context.Context, id int64, props drover.Properties) error {
	err := w.inTx(ctx, id, func(tx *sql.Tx) error { return w.s.setBuildProperties(ctx, tx, id, props) })
	if err != nil {
		return fmt.Errorf("set properties of build %d: %w", id, err)
	}
	return nil
}

// setBuildProperties is SetBuildProperties within tx.
func (s *DB) setBuildProperties(ctx context.Context, tx *sql.Tx, id int64, props drover.Properties) error {
	res, err := s.prep(tx).ExecContext(ctx, s.q(`UPDATE builds SET properties = ? WHERE id = ? AND state = ?`),
		jsonMap(props), id, drover.BuildRunning)
	if err != nil {
		return err
	}
	return mustAffect(res, func() error { return s.buildNotRunning(ctx, tx, id) })
}

// buildNotRunning explains why build id could not be changed as running.
func (s *DB) buildNotRunning(ctx context.Context, q queryer, id int64) error {
	var state drover.BuildState
	err := q.QueryRowContext(ctx, s.q(`SELECT state FROM builds WHERE id = ?`), id).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return drover.Errorf(drover.NotFound, "build %d not found", id)
	}
	if err != nil {
		return fmt.Errorf("read build state: %w", err)
	}
	return drover.Errorf(drover.Conflict, "build %d is already %s", id, state)
}

// FinishBuild, in one transaction, ends running build id and its request
// (see Store). A zero finished becomes now; result must be a final result.
func (w buildWriter) FinishBuild(ctx context.Context, id int64, result drover.Result, summary string, finished time.Time, requeue bool) error {
	err := w.inTx(ctx, id, func(tx *sql.Tx) error { return w.s.finishBuild(ctx, tx, id, result, summary, finished, requeue) })
	if err != nil {
		return fmt.Errorf("finish build %d: %w", id, err)
	}
	return nil
}

// finishBuild is FinishBuild within tx.
func (s *DB) finishBuild(ctx context.Context, tx *sql.Tx, id int64, result drover.Result, summary string, finished time.Time, requeue bool) error {
	if _, err := drover.ParseResult(string(result)); err != nil {
		return err
	}
	finished = orNow(finished)
	// The state test in the UPDATE makes two racing finishes end the
	// build once, on any engine.
	q := s.prep(tx)
	var reqID int64
	err := q.QueryRowContext(ctx, s.q(`UPDATE builds SET state = ?, result = ?, summary = ?, finished = ?
		WHERE id = ? AND state = ? RETURNING request_id`),
		drover.BuildFinished, result, summary, dbTime(finished), id, drover.BuildRunning).Scan(&reqID)
	if errors.Is(err, sql.ErrNoRows) {
		return s.buildNotRunning(ctx, tx, id)
	}
	if err != nil {
		return fmt.Errorf("end build: %w", err)
	}
	state, reqResult := drover.RequestFinished, result
	switch {
	case requeue:
		state, reqResult = drover.RequestPending, drover.ResultNone
	case result == drover.Cancelled:
		state = drover.RequestCancelled
	}
	if _, err := q.ExecContext(ctx, s.q(`UPDATE build_requests SET state = ?, result = ? WHERE id = ?`),
		state, reqResult, reqID); err != nil {
		return fmt.Errorf("end build request %d: %w", reqID, err)
	}
	return nil
}
