package drover

import (
	"sort"
	"time"
)

// Properties are the named string values of a build: its revision, branch,
// build number and worker name, the custom values given when it was forced,
// and values that steps set from their output. Commands interpolate them.
type Properties map[string]string

// Clone returns a copy of p that can be changed without touching p.
func (p Properties) Clone() Properties {
	c := make(Properties, len(p))
	for k, v := range p {
		c[k] = v
	}
	return c
}

// Keys returns the property names in order, for stable output.
func (p Properties) Keys() []string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Change is one commit (or a batch of them) seen on a repository, from a
// poller, a webhook or `drover sendchange`.
type Change struct {
	ID         int64      `json:"id"`
	Repository string     `json:"repository"`
	Branch     string     `json:"branch"`
	Revision   string     `json:"revision"`
	Author     string     `json:"author,omitempty"`
	Comments   string     `json:"comments,omitempty"`
	Files      []string   `json:"files,omitempty"`
	Category   string     `json:"category,omitempty"`
	Properties Properties `json:"properties,omitempty"`
	When       time.Time  `json:"when"`
}

// SourceStamp names the code a build runs on. An empty Revision means "the
// branch's head when the checkout runs".
type SourceStamp struct {
	Repository string `json:"repository,omitempty"`
	Branch     string `json:"branch,omitempty"`
	Revision   string `json:"revision,omitempty"`
}

// BuildRequest is a request that a builder run once on a source stamp. It
// waits in the queue (pending) until the dispatcher claims it for a worker.
type BuildRequest struct {
	ID         int64        `json:"id"`
	Builder    string       `json:"builder"`
	Source     SourceStamp  `json:"source"`
	Properties Properties   `json:"properties,omitempty"`
	Priority   int          `json:"priority"`
	Reason     string       `json:"reason"`
	ChangeIDs  []int64      `json:"change_ids,omitempty"`
	State      RequestState `json:"state"`
	Result     Result       `json:"result,omitempty"`
	Submitted  time.Time    `json:"submitted"`
	// Tries counts builds started for this request; a retry puts the request
	// back to pending and the next claim makes another.
	Tries int `json:"tries"`
	// CancelReason says why a cancelled request was cancelled.
	CancelReason string `json:"cancel_reason,omitempty"`
}

// Build is one run of a builder on one worker for one request.
type Build struct {
	ID         int64       `json:"id"`
	Builder    string      `json:"builder"`
	Number     int         `json:"number"` // counts up per builder from 1
	RequestID  int64       `json:"request_id"`
	Worker     string      `json:"worker"`
	Source     SourceStamp `json:"source"`
	Properties Properties  `json:"properties,omitempty"`
	Reason     string      `json:"reason"`
	// WhyWorker explains the dispatcher's choice of worker, for the build page.
	WhyWorker string `json:"why_worker,omitempty"`
	// Master is the ID of the master that drives the build. Masters of a
	// site hand a build over when its master dies (see Master).
	Master string     `json:"master,omitempty"`
	State  BuildState `json:"state"`
	Result Result     `json:"result,omitempty"`
	// Summary is one line for humans: the failing step, an infra error, etc.
	Summary  string    `json:"summary,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
}

// Duration is how long the build ran, or has run so far at now.
func (b *Build) Duration(now time.Time) time.Duration {
	if b.Finished.IsZero() {
		return now.Sub(b.Started)
	}
	return b.Finished.Sub(b.Started)
}

// Step is the record of one step of a build.
type Step struct {
	BuildID  int64     `json:"build_id"`
	Index    int       `json:"index"` // from 0, in the order the builder lists them
	Name     string    `json:"name"`
	State    StepState `json:"state"`
	Result   Result    `json:"result,omitempty"`
	Summary  string    `json:"summary,omitempty"`
	ExitCode *int      `json:"exit_code,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Parts are the parallel parts of a sharded step, each a build of its
	// own on its own worker; the step's result merges theirs.
	Parts []StepPart `json:"parts,omitempty"`
	// URLs are the links the step published, name → URL: those of its
	// definition (interpolated when it started) and those its command
	// added while it ran.
	URLs map[string]string `json:"urls,omitempty"`
}

// StepPart is one part of a sharded step.
type StepPart struct {
	Index   int    `json:"index"`
	Name    string `json:"name,omitempty"` // the battery, for named shards
	BuildID int64  `json:"build_id,omitempty"`
	Request int64  `json:"request_id,omitempty"`
	Worker  string `json:"worker,omitempty"`
	Result  Result `json:"result,omitempty"`
}

// Log is the index entry of one log of a step. The bytes live in the log
// store, not in the database.
type Log struct {
	ID        int64  `json:"id"`
	BuildID   int64  `json:"build_id"`
	StepIndex int    `json:"step"`
	Name      string `json:"name"` // "stdio" for a command's output
	Bytes     int64  `json:"bytes"`
	// Dropped counts bytes cut from the middle when the log exceeded its limit.
	Dropped  int64 `json:"dropped,omitempty"`
	Complete bool  `json:"complete"`
	// Seq is the sequence number of the last output chunk of the step's
	// command stored in the log, and SeqBytes the log's size just after it:
	// what a restarted master needs to re-attach the command exactly.
	Seq      uint64 `json:"-"`
	SeqBytes int64  `json:"-"`
}

// Availability is a worker's owner's terms for lending it.
type Availability string

const (
	Eager     Availability = "eager"     // happy to build
	Reluctant Availability = "reluctant" // only when no eager worker can
	Draining  Availability = "draining"  // finish what runs, take nothing new
	Offline   Availability = "offline"   // connected but takes nothing
)

// ParseAvailability parses the name of an availability.
func ParseAvailability(s string) (Availability, error) {
	switch a := Availability(s); a {
	case Eager, Reluctant, Draining, Offline:
		return a, nil
	}
	return "", Errorf(Invalid, "unknown availability %q (want eager, reluctant, draining or offline)", s)
}

// TakesWork reports whether a worker at availability a may be given new
// builds at all (a reluctant one only when needed).
func (a Availability) TakesWork() bool { return a != Draining && a != Offline }

// AvailabilityOverride is an operator's setting of a worker's
// availability, which wins over the worker's own until cleared.
type AvailabilityOverride struct {
	Availability Availability `json:"availability"`
	Reason       string       `json:"reason,omitempty"`
	By           string       `json:"by"` // who set it: "operator <token id>", "quarantine", …
	At           time.Time    `json:"at"`
}

// Downtime is a time window in which the master gives a worker no new
// build (running ones finish), whatever the worker's own availability and
// an operator's override say: operator downtime beats owner windows.
type Downtime struct {
	// Source says who declared it: "config" (drover.worker(downtime = ...)).
	Source string `json:"source"`
	// Window is the window the worker is in, with the zone it is read in:
	// "Wed 08:00-10:00 Europe/Berlin".
	Window string `json:"window"`
	// Until is when it ends; zero when it never does.
	Until time.Time `json:"until,omitzero"`
	// Reason is the window and its end in words: "Wed 08:00-10:00
	// Europe/Berlin until 10:00".
	Reason string `json:"reason"`
}

// By names the downtime as the setter of an availability: "downtime
// (config)".
func (d *Downtime) By() string { return "downtime (" + d.Source + ")" }

// String is the downtime in words: "downtime (config): Wed 08:00-10:00
// Europe/Berlin until 10:00".
func (d *Downtime) String() string { return d.By() + ": " + d.Reason }

// Worker is what the master knows of a worker, connected or not.
type Worker struct {
	Name    string     `json:"name"`
	Facts   Facts      `json:"facts,omitempty"`
	Labels  Properties `json:"labels,omitempty"`
	Version string     `json:"version,omitempty"`
	OS      string     `json:"os,omitempty"`
	Arch    string     `json:"arch,omitempty"`
	// Availability is what the worker itself reports (its owner's command,
	// its time window, its load ceiling), and AvailabilityReason why.
	Availability       Availability `json:"availability"`
	AvailabilityReason string       `json:"availability_reason,omitempty"`
	// Override, when set, is an operator's availability for the worker,
	// which wins over the worker's own. Effective tells which applies.
	Override *AvailabilityOverride `json:"override,omitempty"`
	// Downtime, when set, is the downtime window the worker is in now,
	// which wins over both its own availability and the override. The
	// master sets it as it serves the worker, from its config; the store
	// never holds it.
	Downtime  *Downtime `json:"downtime,omitempty"`
	Connected bool      `json:"connected"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	// ConnectedAt is when the current session began (zero when not connected).
	ConnectedAt time.Time `json:"connected_at,omitzero"`
	Address     string    `json:"address,omitempty"`
	// Approval is an admin's verdict on the worker: "approved" (the
	// default, and every worker enrolled while approval is not required),
	// "pending" (enrolled under drover.master(approve_workers = True) and
	// not yet decided) or "rejected". Only an approved worker may connect.
	Approval string `json:"approval,omitempty"`
	// Master is the ID of the master the worker is (or was last)
	// connected to.
	Master string `json:"master,omitempty"`
}

// Master is one master of a site: several masters sharing one
// PostgreSQL database. Each records itself and beats a heartbeat; a master
// whose heartbeat is older than the site's timeout is dead, and another
// takes over its running builds.
type Master struct {
	ID string `json:"id"`
	// URL is its web UI, WorkersAddr its worker port (host:port).
	URL         string    `json:"url,omitempty"`
	WorkersAddr string    `json:"workers_addr,omitempty"`
	Version     string    `json:"version,omitempty"`
	Started     time.Time `json:"started"`
	Heartbeat   time.Time `json:"heartbeat"`
	// SinceBeat is how long before the list was read the last heartbeat
	// was taken, both by the database's clock: masters judge each other's
	// liveness by it, never by comparing their own clocks.
	SinceBeat time.Duration `json:"since_beat"`
}

// Effective returns the availability that dispatch applies, why, and who
// set it: a downtime the worker is in, else an operator's override, else
// the worker's own.
func (w *Worker) Effective() (a Availability, reason, by string) {
	if d := w.Downtime; d != nil {
		return Offline, d.Reason, d.By()
	}
	if w.Override != nil {
		return w.Override.Availability, w.Override.Reason, w.Override.By
	}
	a = w.Availability
	if a == "" {
		a = Eager
	}
	return a, w.AvailabilityReason, "worker"
}

// Token is a stored credential. The secret is never stored, only its hash.
type Token struct {
	ID   string    `json:"id"` // public part, used to find the row
	Kind TokenKind `json:"kind"`
	Hash string    `json:"-"` // bcrypt of the secret part
	// Role is what an API token may do; Worker names the worker a worker
	// token belongs to.
	Role     Role      `json:"role,omitempty"`
	Worker   string    `json:"worker,omitempty"`
	Comment  string    `json:"comment,omitempty"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires,omitzero"`
	UsesLeft int       `json:"uses_left"` // -1: unlimited
	LastUsed time.Time `json:"last_used,omitzero"`
	Revoked  bool      `json:"revoked"`
}

// TokenKind says what a token is for.
type TokenKind string

const (
	TokenAPI    TokenKind = "api"    // REST API calls
	TokenEnroll TokenKind = "enroll" // lets a new worker register itself
	TokenWorker TokenKind = "worker" // one worker's own secret
)

// Role is what an API caller may do. Each role includes the ones before it.
type Role string

const (
	RoleRead     Role = "read"     // see everything
	RoleOperator Role = "operator" // force, cancel, rebuild, availability
	RoleAdmin    Role = "admin"    // tokens, workers, config reload
)

// Allows reports whether a caller with role r may act as role need.
func (r Role) Allows(need Role) bool {
	rank := map[Role]int{RoleRead: 1, RoleOperator: 2, RoleAdmin: 3}
	return rank[r] >= rank[need] && rank[need] > 0
}
