// Package store keeps Drover's state in a SQL database: changes, build
// requests, builds, steps, log index entries, workers and tokens.
//
// One interface, Store, has one database/sql implementation with a small
// dialect table per engine (SQLite and PostgreSQL), so the same SQL
// and the same test suite serve both. Migrations are embedded per dialect
// and run by Open. Every state change that must survive a crash is one
// transaction; methods that change two tables (claiming a request and
// creating its build, finishing a build and its request) do both or neither.
//
// Errors use drover's kinds: NotFound for a missing row, Conflict for a
// state that forbids the change (claiming a request that is not pending).
package store

import (
	"context"
	"time"

	"github.com/drover-ci/drover"
)

// Store is the master's persistent state. It is safe for concurrent use.
type Store interface {
	// Close releases the database. Calls after Close fail.
	Close() error

	// AddChange stores c and sets c.ID.
	AddChange(ctx context.Context, c *drover.Change) error
	GetChange(ctx context.Context, id int64) (*drover.Change, error)
	// ListChanges returns changes newest first.
	ListChanges(ctx context.Context, f ChangeFilter) ([]drover.Change, error)

	// AddRequests stores reqs in one transaction as pending, setting each
	// ID, State and (when zero) Submitted.
	AddRequests(ctx context.Context, reqs []*drover.BuildRequest) error
	GetRequest(ctx context.Context, id int64) (*drover.BuildRequest, error)
	// ListRequests returns requests in queue order: priority (high first),
	// then submission time, then ID.
	ListRequests(ctx context.Context, f RequestFilter) ([]drover.BuildRequest, error)
	// ClaimRequest, in one transaction, moves request id from pending to
	// claimed, increments its Tries, and creates build b for it: b gets the
	// next number for its builder, b.ID, b.RequestID = id, b.State =
	// running, and the request's Source and Properties when b's are empty.
	// It fails with Conflict if the request is not pending (another master
	// or a cancel got there first).
	ClaimRequest(ctx context.Context, id int64, b *drover.Build) error
	// CancelRequest moves a pending request to cancelled with result
	// cancelled. It fails with Conflict if the request is not pending.
	CancelRequest(ctx context.Context, id int64, reason string) error

	GetBuild(ctx context.Context, id int64) (*drover.Build, error)
	GetBuildByNumber(ctx context.Context, builder string, number int) (*drover.Build, error)
	// ListBuilds returns builds newest first (highest ID first).
	ListBuilds(ctx context.Context, f BuildFilter) ([]drover.Build, error)
	// SetBuildProperties replaces the properties of a running build.
	SetBuildProperties(ctx context.Context, id int64, props drover.Properties) error
	// FinishBuild, in one transaction, ends running build id with result
	// and summary at time finished, and its request with it: the request
	// becomes finished (or cancelled, for a cancelled result) with the same
	// result, or, when requeue is set, goes back to pending to be claimed
	// again. It fails with Conflict if the build is already finished.
	FinishBuild(ctx context.Context, id int64, result drover.Result, summary string, finished time.Time, requeue bool) error

	// AddSteps stores the steps of a build as it starts.
	AddSteps(ctx context.Context, steps []drover.Step) error
	// UpdateStep stores s, found by (BuildID, Index).
	UpdateStep(ctx context.Context, s *drover.Step) error
	// ListSteps returns a build's steps in order of Index.
	ListSteps(ctx context.Context, buildID int64) ([]drover.Step, error)

	// AddLog stores a log index entry and sets l.ID.
	AddLog(ctx context.Context, l *drover.Log) error
	// UpdateLog stores l's Bytes, Dropped and Complete.
	UpdateLog(ctx context.Context, l *drover.Log) error
	GetLog(ctx context.Context, id int64) (*drover.Log, error)
	// ListLogs returns a build's logs in order of step, then ID.
	ListLogs(ctx context.Context, buildID int64) ([]drover.Log, error)
	// SetLogProgress stores, in one transaction, the Seq and SeqBytes of
	// each given log (found by ID; unknown ones are skipped).
	SetLogProgress(ctx context.Context, progress []drover.Log) error
	// ExpiredLogs returns up to limit logs of builds that finished before t.
	ExpiredLogs(ctx context.Context, before time.Time, limit int) ([]drover.Log, error)
	// DeleteLogs removes the index entries of logs whose bytes are gone.
	DeleteLogs(ctx context.Context, ids []int64) error

	// UpsertWorker stores w by name, keeping FirstSeen of an existing row.
	UpsertWorker(ctx context.Context, w *drover.Worker) error
	GetWorker(ctx context.Context, name string) (*drover.Worker, error)
	// ListWorkers returns every worker by name.
	ListWorkers(ctx context.Context) ([]drover.Worker, error)
	// SetAvailabilityOverride sets (or, with o nil, clears) an operator's
	// availability for worker name, which UpsertWorker never changes. It
	// fails with NotFound for an unknown worker.
	SetAvailabilityOverride(ctx context.Context, name string, o *drover.AvailabilityOverride) error
	// SetApproval records an admin's verdict on worker name: approval is
	// "approved", "pending" or "rejected" (see ApprovalApproved), by names
	// the admin, at when. UpsertWorker never changes it; Enroll sets it
	// from the enrolling worker. It fails with Invalid for another word
	// and NotFound for an unknown worker.
	SetApproval(ctx context.Context, name, approval, by string, at time.Time) error
	// MarkAllDisconnected sets every worker disconnected; a master calls it
	// as it starts, since it has no sessions yet.
	MarkAllDisconnected(ctx context.Context) error

	// AddToken stores t (its Hash, never its secret).
	AddToken(ctx context.Context, t *drover.Token) error
	GetToken(ctx context.Context, id string) (*drover.Token, error)
	// ListTokens returns tokens of a kind (all kinds when kind is "").
	ListTokens(ctx context.Context, kind drover.TokenKind) ([]drover.Token, error)
	// UseToken records one use of token id at time at: it sets LastUsed
	// and decrements UsesLeft unless it is negative (unlimited). It fails
	// with Unauthorized when the token is revoked, expired at at, or has
	// no uses left.
	UseToken(ctx context.Context, id string, at time.Time) error
	RevokeToken(ctx context.Context, id string) error
	// Enroll, in one transaction, uses enrollment token enrollID (as
	// UseToken does), stores the new worker token wt, and upserts worker w.
	Enroll(ctx context.Context, enrollID string, at time.Time, wt *drover.Token, w *drover.Worker) error
}

// ChangeFilter selects changes. Zero fields select everything.
type ChangeFilter struct {
	Limit int // 0: a default of 100
}

// RequestFilter selects build requests. Zero fields select everything.
type RequestFilter struct {
	State   drover.RequestState
	Builder string
	Limit   int // 0: no limit
}

// BuildFilter selects builds. Zero fields select everything.
type BuildFilter struct {
	Builder   string
	Worker    string
	State     drover.BuildState
	RequestID int64
	// BeforeID, when set, returns only builds with a smaller ID (paging).
	BeforeID int64
	Limit    int // 0: a default of 100
}
