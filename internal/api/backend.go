package api

import (
	"context"
	"io"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
)

// Reader is what the API and the web UI read from the store: lists and
// single records, with the root vocabulary's filters. Lists are in the
// store's order (builds newest first, requests in queue order, workers by
// name, changes newest first); a missing record is a NotFound error.
type Reader interface {
	GetBuild(ctx context.Context, id int64) (*drover.Build, error)
	GetBuildByNumber(ctx context.Context, builder string, number int) (*drover.Build, error)
	ListBuilds(ctx context.Context, f drover.BuildFilter) ([]drover.Build, error)
	ListSteps(ctx context.Context, buildID int64) ([]drover.Step, error)
	ListLogs(ctx context.Context, buildID int64) ([]drover.Log, error)
	GetLog(ctx context.Context, id int64) (*drover.Log, error)
	ListArtifacts(ctx context.Context, buildID int64) ([]drover.Artifact, error)
	GetRequest(ctx context.Context, id int64) (*drover.BuildRequest, error)
	ListRequests(ctx context.Context, f drover.RequestFilter) ([]drover.BuildRequest, error)
	GetWorker(ctx context.Context, name string) (*drover.Worker, error)
	ListWorkers(ctx context.Context) ([]drover.Worker, error)
	ListChanges(ctx context.Context, f drover.ChangeFilter) ([]drover.Change, error)
}

// Backend is what the HTTP API and web UI need of a running master. The
// master implements it; reads go straight to the store, writes go through
// the master so that it can wake the dispatcher and publish events.
type Backend interface {
	// Reader is the store's read side: writes go through the methods
	// below, so that the master can wake the dispatcher and publish events.
	Reader() Reader
	// Builders returns the builders of the config in force, in config order.
	Builders() []drover.Builder
	// Builder returns the builder named name in the config in force.
	Builder(name string) (*drover.Builder, bool)
	// Title and URL are the master's settings, for page headers and links.
	Title() string
	URL() string

	// Force queues a build request for a builder; the request's Builder,
	// Source, Properties, Priority and Reason come from req. It fails with
	// NotFound for an unknown builder.
	Force(ctx context.Context, req *drover.BuildRequest) error
	// AddChange stores a change and lets the schedulers react to it.
	AddChange(ctx context.Context, c *drover.Change) error
	// CancelBuild stops a running build (its command is killed, the build
	// ends cancelled). It fails with Conflict if the build has finished.
	CancelBuild(ctx context.Context, buildID int64, reason string) error
	// CancelRequest cancels a pending request.
	CancelRequest(ctx context.Context, requestID int64, reason string) error

	// Queue returns the pending requests in the order the dispatcher serves
	// them (priority, then age), each with why it is waiting.
	Queue(ctx context.Context) ([]drover.QueueEntry, error)
	// Locks returns every lock instance in use or declared, with its
	// holders and waiters.
	Locks() []drover.LockState
	// SetAvailability sets an operator's availability for a worker, with a
	// reason; a == "" clears it so the worker's own applies again. by names
	// the caller for the record ("operator <token id>"). It never stops a
	// running build. NotFound for an unknown worker.
	SetAvailability(ctx context.Context, worker string, a drover.Availability, reason, by string) error
	// SetApproval records an admin's verdict on a worker: approval is
	// "approved", "pending" or "rejected" (drover.ApprovalApproved, …), by
	// names the caller for the record. An approved worker is let in at its
	// next connection attempt; a worker no longer approved loses its live
	// session, if it has one. Invalid for another word, NotFound for an
	// unknown worker.
	SetApproval(ctx context.Context, worker, approval, by string) error

	// ConfigStatus says which config is in force and how the last load
	// went.
	ConfigStatus() ConfigStatus
	// Site says which master this is and which masters share its
	// database, alive or not.
	Site(ctx context.Context) (SiteStatus, error)
	// Reload loads the master's config file again with the checkconfig
	// loader. A broken config is refused (Invalid, with file:line in the
	// message) and the one in force stays; running builds are never
	// interrupted.
	Reload(ctx context.Context) error

	// Eligibility explains, for every known worker, whether it may run
	// builder name and why.
	Eligibility(ctx context.Context, builder string) ([]drover.Eligibility, error)

	// Authenticate checks an API token and returns its role. An empty
	// token is anonymous and fails with Unauthorized.
	Authenticate(ctx context.Context, token string) (drover.Role, error)

	// Events returns a subscription to the master's events.
	Events() *events.Subscription

	// ReadLog writes the stored bytes of log id from offset to w.
	ReadLog(ctx context.Context, id int64, offset int64, w io.Writer) error
	// FollowLog calls fn with the bytes of log id from offset, first those
	// stored, then live ones as they arrive, until the log is complete (nil)
	// or ctx is done.
	FollowLog(ctx context.Context, id int64, offset int64, fn func([]byte) error) error
}
