// Package store keeps Drover's state in a SQL database: changes, build
// requests, builds, steps, log index entries, workers, tokens and the
// masters of a site.
//
// One interface, Store, has one database/sql implementation with a small
// dialect table per engine (SQLite and PostgreSQL), so the same SQL
// and the same test suite serve both. Migrations are embedded per dialect
// and run by Open. Every state change that must survive a crash is one
// transaction; methods that change two tables (claiming a request and
// creating its build, finishing a build and its request) do both or neither.
//
// Several masters may share one PostgreSQL database and form a site: they
// share the queue (ClaimRequest), record themselves (Heartbeat), hand
// over the builds of a dead master (AdoptBuild) and tell each other of
// changes (Notify, Listen).
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
	ListChanges(ctx context.Context, f drover.ChangeFilter) ([]drover.Change, error)

	// AddRequests stores reqs in one transaction as pending, setting each
	// ID, State and (when zero) Submitted.
	AddRequests(ctx context.Context, reqs []*drover.BuildRequest) error
	GetRequest(ctx context.Context, id int64) (*drover.BuildRequest, error)
	// ListRequests returns requests in queue order: priority (high first),
	// then submission time, then ID.
	ListRequests(ctx context.Context, f drover.RequestFilter) ([]drover.BuildRequest, error)
	// ClaimRequest, in one transaction, moves request id from pending to
	// claimed, increments its Tries, and creates build b for it: b gets the
	// next number for its builder, b.ID, b.RequestID = id, b.State =
	// running, and the request's Source and Properties when b's are empty.
	// b.Master, the master that will drive the build, is stored as given.
	// It fails with Conflict if the request is not pending (another master
	// or a cancel got there first).
	ClaimRequest(ctx context.Context, id int64, b *drover.Build) error
	// ClaimRequests claims several requests in one transaction, each as
	// ClaimRequest would, and sets each claim's Err: a request that is
	// not pending (Conflict), unknown (NotFound) or of another builder
	// (Invalid) is passed over and the others are claimed. A claim with
	// a Start also starts its build in that transaction, as StartBuild
	// would. Any other failure is returned and claims none.
	ClaimRequests(ctx context.Context, claims []Claim) error
	// CancelRequest moves a pending request to cancelled with result
	// cancelled. It fails with Conflict if the request is not pending.
	CancelRequest(ctx context.Context, id int64, reason string) error

	// Builds returns the writes of running builds as master (an ID, or
	// "" for a master outside any site's records) drives them: see
	// BuildWriter.
	Builds(master string) BuildWriter

	GetBuild(ctx context.Context, id int64) (*drover.Build, error)
	GetBuildByNumber(ctx context.Context, builder string, number int) (*drover.Build, error)
	// ListBuilds returns builds newest first (highest ID first).
	ListBuilds(ctx context.Context, f drover.BuildFilter) ([]drover.Build, error)
	// ListSteps returns a build's steps in order of Index.
	ListSteps(ctx context.Context, buildID int64) ([]drover.Step, error)

	GetLog(ctx context.Context, id int64) (*drover.Log, error)
	// ListLogs returns a build's logs in order of step, then ID.
	ListLogs(ctx context.Context, buildID int64) ([]drover.Log, error)
	// ExpiredLogs returns up to limit logs of builds that finished before t.
	ExpiredLogs(ctx context.Context, before time.Time, limit int) ([]drover.Log, error)
	// DeleteLogs removes the index entries of logs whose bytes are gone.
	DeleteLogs(ctx context.Context, ids []int64) error

	// AddArtifact stores an uploaded file's index entry and sets its ID,
	// replacing the entry of the same build and path. NotFound for an
	// unknown build.
	AddArtifact(ctx context.Context, a *drover.Artifact) error
	// GetArtifact returns artifact id, or NotFound.
	GetArtifact(ctx context.Context, id int64) (*drover.Artifact, error)
	// ListArtifacts returns a build's artifacts by path.
	ListArtifacts(ctx context.Context, buildID int64) ([]drover.Artifact, error)
	// ExpiredArtifacts returns up to limit artifacts created before t.
	ExpiredArtifacts(ctx context.Context, before time.Time, limit int) ([]drover.Artifact, error)
	// DeleteArtifacts removes the index entries of artifacts whose bytes
	// are gone; unknown IDs are ignored.
	DeleteArtifacts(ctx context.Context, ids []int64) error

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
	// "approved", "pending" or "rejected" (see drover.ApprovalApproved), by names
	// the admin, at when. UpsertWorker never changes it; Enroll sets it
	// from the enrolling worker. It fails with Invalid for another word
	// and NotFound for an unknown worker.
	SetApproval(ctx context.Context, name, approval, by string, at time.Time) error
	// MarkDisconnected sets disconnected (clearing ConnectedAt) the
	// workers whose Master is master, and those whose Master is "" (rows
	// from before sites). A master calls it with its own ID as it starts,
	// since it has no sessions yet; the workers of the site's other
	// masters keep theirs.
	MarkDisconnected(ctx context.Context, master string) error

	// Heartbeat records master m, all its fields, by ID: a master calls it
	// as it starts and then every few seconds with a new m.Heartbeat, so
	// that the others know it is alive. A zero Started or Heartbeat
	// becomes now, and m gets the stored values.
	Heartbeat(ctx context.Context, m *drover.Master) error
	// ListMasters returns the recorded masters by ID, live or dead: the
	// caller judges their heartbeats.
	ListMasters(ctx context.Context) ([]drover.Master, error)
	// RemoveMaster deletes master id's record, as a master stopping
	// cleanly says it is gone so that the others adopt its builds at
	// once rather than after its heartbeat times out. Removing an absent
	// master is not an error.
	RemoveMaster(ctx context.Context, id string) error
	// AdoptBuild makes master to the driver of build id if, in one
	// statement, the build is running and driven by master from. It
	// reports whether it changed the build: of masters racing to adopt
	// a dead master's build, exactly one gets true; the others, and any
	// that find the build finished, adopted already or unknown, get false.
	AdoptBuild(ctx context.Context, id int64, from, to string) (bool, error)

	// Notify sends payload to every Listen on the database, this
	// process's included: on PostgreSQL through NOTIFY, to the masters
	// of the site; on SQLite, whose database has one master, to no one.
	// A payload must be text (UTF-8, no NUL) of at most MaxNotifyPayload
	// bytes, or Notify fails with Invalid. Delivery is at most once:
	// notices sent while a listener reconnects are lost (see Listen).
	Notify(ctx context.Context, payload []byte) error
	// Listen calls fn with the payload of every notice sent by Notify, in
	// the order sent, from the calling goroutine and one at a time, until
	// ctx is done; then it returns nil. It keeps a connection of its own
	// and, when that breaks, reconnects with backoff, never giving up; as
	// soon as it listens again it calls lost (from the same goroutine, before
	// any later fn), since notices sent meanwhile are gone: the caller
	// rereads what it follows. It calls lost too when its first attempt
	// to connect fails and a later one succeeds. When the store is closed
	// Listen returns an Unavailable error. On SQLite it only waits.
	Listen(ctx context.Context, fn func(payload []byte), lost func()) error

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

// BuildWriter is the writes of running builds for the master that drives
// them. Each is one transaction that first checks, with the build's row
// locked against adoption, that this master drives the build (its ID is
// the fencing token): a master whose heartbeat lapsed and whose builds
// another master adopted gets a Conflict wrapping ErrNotDriver from its
// late writes, which change nothing. A write about an unknown build is
// NotFound.
type BuildWriter interface {
	// SetBuildProperties replaces the properties of a running build.
	SetBuildProperties(ctx context.Context, id int64, props drover.Properties) error
	// FinishBuild, in one transaction, ends running build id with result
	// and summary at time finished, and its request with it: the request
	// becomes finished (or cancelled, for a cancelled result) with the same
	// result, or, when requeue is set, goes back to pending to be claimed
	// again. It fails with Conflict if the build is already finished.
	FinishBuild(ctx context.Context, id int64, result drover.Result, summary string, finished time.Time, requeue bool) error

	// StartBuild, in one transaction, does what a build's start would
	// otherwise do in three: SetBuildProperties(id, props), AddSteps(steps)
	// and, when first is not nil, AddLog(first), which sets first.ID. It
	// changes nothing if any of them fails.
	StartBuild(ctx context.Context, id int64, props drover.Properties, steps []drover.Step, first *drover.Log) error
	// StartStep, in one transaction, does UpdateStep(s) and AddLog(l),
	// which sets l.ID.
	StartStep(ctx context.Context, s *drover.Step, l *drover.Log) error
	// FinishStep, in one transaction, does UpdateLog(l) and UpdateStep(s);
	// either may be nil.
	FinishStep(ctx context.Context, s *drover.Step, l *drover.Log) error
	// AddSteps stores the steps of a build as it starts.
	AddSteps(ctx context.Context, steps []drover.Step) error
	// UpdateStep stores s, found by (BuildID, Index).
	UpdateStep(ctx context.Context, s *drover.Step) error
	// SetStepURL adds (or replaces) one link of a step, found by
	// (buildID, step), in one transaction, leaving its other links as they
	// are. It fails with NotFound when there is no such step and Invalid
	// for a link drover.CheckStepURL refuses or one past drover.MaxStepURLs.
	SetStepURL(ctx context.Context, buildID int64, step int, name, url string) error
	// AddLog stores a log index entry and sets l.ID.
	AddLog(ctx context.Context, l *drover.Log) error
	// UpdateLog stores l's Bytes, Dropped and Complete.
	UpdateLog(ctx context.Context, l *drover.Log) error
	// SetLogProgress stores, in one transaction, the Seq and SeqBytes of
	// each given log (found by ID; unknown ones are skipped). A log of a
	// build the master does not drive fails it whole.
	SetLogProgress(ctx context.Context, progress []drover.Log) error
	// AbandonBuild ends running build id that its master cannot follow
	// (a build a dead master left, that this one adopted and cannot
	// re-attach), in one transaction: every step not finished ends with
	// a.Result and a.StepSummary, the logs in a.Logs are recorded
	// complete with their sizes, and the build ends as FinishBuild ends
	// it.
	AbandonBuild(ctx context.Context, id int64, a Abandon) error
}
