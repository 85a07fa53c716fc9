package drover

import "time"

// QueueEntry is a pending build request with the reason it is waiting, as
// the queue page and `drover queue` show it.
type QueueEntry struct {
	Request BuildRequest `json:"request"`
	// Waiting says why the request has not started, in words: "no eligible
	// worker online (for 12m)", "all 3 eligible workers busy", "lock vm held
	// by build 17", "only reluctant workers free (waits 4m more)", …
	Waiting string `json:"waiting"`
	// WaitCode classifies Waiting, for programs.
	WaitCode WaitCode `json:"waiting_code,omitempty"`
	// NoWorkerSince is when the request last had an eligible worker online;
	// zero while it has one. Requests expire after a configured time with
	// none.
	NoWorkerSince time.Time `json:"no_worker_since,omitzero"`
}

// WaitCode classifies why a pending request waits, so that programs act
// on a code, never on the words.
type WaitCode string

const (
	WaitNoBuilder   WaitCode = "no_builder"         // its builder is not in the config
	WaitMaxBuilds   WaitCode = "max_builds"         // its builder runs its max_builds
	WaitNoWorker    WaitCode = "no_eligible_worker" // no eligible worker is online
	WaitUnavailable WaitCode = "unavailable"        // every eligible worker is draining or offline
	WaitShardBusy   WaitCode = "shard_busy"         // the workers free of this sharded step's parts are busy
	WaitBusy        WaitCode = "busy"               // every eligible worker is busy
	WaitReluctant   WaitCode = "only_reluctant"     // only reluctant workers are free
	WaitLock        WaitCode = "lock"               // a lock it needs is held, or queued for by another
	WaitDispatch    WaitCode = "dispatching"        // not yet looked at
)

// WaitReason says why a pending request waits: a code and the words for
// people ("all 3 eligible workers busy").
type WaitReason struct {
	Code WaitCode `json:"code"`
	Text string   `json:"text"`
}

// LockScope says whether a lock is one for the master or one per worker.
type LockScope string

const (
	LockMaster LockScope = "master" // one counting semaphore for the whole site
	LockWorker LockScope = "worker" // one semaphore on each worker
)

// LockDef declares a lock in the config: a counting semaphore of Max slots.
type LockDef struct {
	Name  string    `json:"name"`
	Max   int       `json:"max"`
	Scope LockScope `json:"scope"`
	Pos   string    `json:"pos,omitempty"`
}

// LockUse is a builder's or step's need of a lock: one slot (counting), or
// every slot (exclusive).
type LockUse struct {
	Lock      string `json:"lock"`
	Exclusive bool   `json:"exclusive,omitempty"`
}

// LockHolder is a build (or one of its steps) holding or waiting for a lock.
type LockHolder struct {
	BuildID   int64     `json:"build_id,omitempty"`
	RequestID int64     `json:"request_id,omitempty"` // waiters not yet started
	Builder   string    `json:"builder"`
	Number    int       `json:"number,omitempty"`
	Step      int       `json:"step"` // -1: held by the whole build
	Exclusive bool      `json:"exclusive,omitempty"`
	Since     time.Time `json:"since"`
}

// LockState is one lock instance as it stands: its holders and waiters.
type LockState struct {
	Name    string       `json:"name"`
	Scope   LockScope    `json:"scope"`
	Worker  string       `json:"worker,omitempty"` // for a worker-scoped instance
	Max     int          `json:"max"`
	Holders []LockHolder `json:"holders"`
	Waiters []LockHolder `json:"waiters"`
}
