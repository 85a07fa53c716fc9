package drover

import "time"

// Builder is the definition of a builder, as the config describes it: what
// it needs from a worker and the steps it runs. It is a plain value; the
// config loader makes it and the master reads it.
type Builder struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Requires is what a worker's facts must satisfy to run this builder.
	Requires []Requirement `json:"requires,omitempty"`
	// Workers, when not empty, pins the builder to these named workers (they
	// must still satisfy Requires).
	Workers []string          `json:"workers,omitempty"`
	Classes map[string]string `json:"classes,omitempty"` // axis → value, e.g. compiler → clang
	Stable  bool              `json:"stable"`
	// MaxBuilds caps how many builds of this builder run at once across the
	// fleet; 0 means no cap.
	MaxBuilds int `json:"max_builds,omitempty"`
	Priority  int `json:"priority,omitempty"`
	// Locks are taken, all or none, before the build starts and held to its
	// end.
	Locks []LockUse `json:"locks,omitempty"`
	// Collapse lets a newer scheduler-made request for the same branch
	// replace older pending ones (newest wins); forced requests never
	// collapse.
	Collapse bool `json:"collapse"`
	// ExpireAfter cancels a pending request that has had no eligible worker
	// online for this long; zero: the master's setting.
	ExpireAfter time.Duration `json:"expire_after,omitempty"`
	Properties  Properties    `json:"properties,omitempty"`
	Steps       []StepSpec    `json:"steps"`
	// Pos is where the builder was defined, "file:line", for error messages.
	Pos string `json:"pos,omitempty"`
}

// StepKind says how the master turns a step into work.
type StepKind string

const (
	StepShell    StepKind = "shell"    // run a command on the worker
	StepCheckout StepKind = "checkout" // fetch and check out the build's revision with git
	StepUpload   StepKind = "upload"   // copy files from the worker to the master, as artifacts
	StepDownload StepKind = "download" // copy files from the master to the worker
)

// StepSpec is the definition of one step of a builder.
type StepSpec struct {
	Kind StepKind `json:"kind"`
	Name string   `json:"name"`
	// Command is run by the platform's shell when Shell is set (a string in
	// the config), or exec'd directly as argv otherwise (a list in the
	// config). Elements may hold %(prop:name)s interpolations.
	Command []string          `json:"command,omitempty"`
	Shell   bool              `json:"shell,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// Workdir is relative to the builder's directory on the worker.
	Workdir string `json:"workdir,omitempty"`
	// Timeout ends the command when it prints nothing for this long;
	// MaxTime ends it when it has run this long. Zero: no limit.
	Timeout time.Duration `json:"timeout,omitempty"`
	MaxTime time.Duration `json:"max_time,omitempty"`
	// KillGrace is how long after SIGTERM the process group gets SIGKILL.
	KillGrace time.Duration `json:"kill_grace,omitempty"`

	HaltOnFailure  bool `json:"halt_on_failure,omitempty"`
	FlunkOnFailure bool `json:"flunk_on_failure,omitempty"`
	WarnOnFailure  bool `json:"warn_on_failure,omitempty"`
	AlwaysRun      bool `json:"always_run,omitempty"`
	// DecodeRC maps exit codes to results; codes not listed are failures,
	// except 0, which is success unless listed.
	DecodeRC map[int]Result `json:"decode_rc,omitempty"`
	// When, if set, runs the step only if every condition holds on the
	// build's properties; otherwise the step is skipped.
	When []Condition `json:"when,omitempty"`
	// SetProperty stores the command's whole trimmed stdout in a property.
	SetProperty string `json:"set_property,omitempty"`
	// Extract sets properties from the first match of a regular expression
	// (first capture group, or the whole match) on the command's stdout.
	Extract map[string]string `json:"extract,omitempty"`
	// URLs are links the step publishes (name → URL, e.g. a coverage
	// report), interpolated with the build's properties when the step
	// starts and shown on the build page and in the API. The command may
	// add more while it runs (`drover step url NAME URL`).
	URLs map[string]string `json:"urls,omitempty"`

	// Locks are taken, all or none, when the step starts and released when
	// it ends.
	Locks []LockUse `json:"locks,omitempty"`
	// Shards, when more than 1, runs the step as that many parallel parts
	// on different workers, each told DROVER_SHARD_INDEX and
	// DROVER_SHARD_COUNT; ShardNames names them (test batteries) instead,
	// adding DROVER_SHARD_NAME. The step's result merges the parts'.
	Shards     int      `json:"shards,omitempty"`
	ShardNames []string `json:"shard_names,omitempty"`

	// Checkout steps only. The worker runs git itself (argv, no shell, on
	// every OS); see internal/gitcheckout for what each option does.
	Source *GitSource `json:"source,omitempty"`
	// Mode is "incremental" (keep the clone, fetch) or "full" (clean it).
	Mode string `json:"mode,omitempty"`
	// Method is how a full checkout cleans, as in Buildbot: "fresh"
	// (untracked and ignored files go; the default), "clean" (untracked
	// files go, ignored ones stay) or "clobber" (the directory goes and
	// is cloned anew). Empty for an incremental checkout.
	Method string `json:"method,omitempty"`
	// Depth, when more than 0, makes a shallow clone of that many commits.
	Depth int `json:"depth,omitempty"`
	// Filter, when set, makes a partial clone ("blob:none": blobs are
	// fetched as the checkout needs them).
	Filter string `json:"filter,omitempty"`
	// Submodules checks the submodules out too, recursively.
	Submodules bool `json:"submodules,omitempty"`
	// RecloneOnFailure removes a clone whose update fails (corrupt, or
	// its fetch fails) and clones anew, once.
	RecloneOnFailure bool `json:"reclone_on_failure,omitempty"`

	// Upload and download steps only. Src is, for an upload, the file or
	// directory to send, relative to the step's Workdir on the worker (and
	// never leaving the builder's directory); for a download, what to
	// fetch: "artifact:<path>" (an artifact of this build) or
	// "files/<path>" (under the master's files directory). Dest is, for an
	// upload, the artifact path the files go under; for a download, where
	// they go relative to the step's Workdir. MaxBytes bounds the
	// transfer's total size.
	Src      string `json:"src,omitempty"`
	Dest     string `json:"dest,omitempty"`
	MaxBytes int64  `json:"max_bytes,omitempty"`

	Pos string `json:"pos,omitempty"`
}

// ShardCount is how many parts the step runs as (1 when not sharded).
func (s *StepSpec) ShardCount() int {
	if n := len(s.ShardNames); n > 0 {
		return n
	}
	return max(s.Shards, 1)
}

// Condition is one test of a step's When: the property Prop must equal
// Value, or (Negate) must not; Value "*" means present and non-empty.
type Condition struct {
	Prop   string `json:"prop"`
	Value  string `json:"value"`
	Negate bool   `json:"negate,omitempty"`
}

// Holds reports whether c is true of props.
func (c Condition) Holds(props Properties) bool {
	v, ok := props[c.Prop]
	var match bool
	if c.Value == "*" {
		match = ok && v != ""
	} else {
		match = ok && v == c.Value
	}
	return match != c.Negate
}

// GitSource is a git repository a builder checks out and a scheduler or
// poller watches.
type GitSource struct {
	Name     string        `json:"name"`
	URL      string        `json:"url"`
	Branches []string      `json:"branches,omitempty"`
	Poll     time.Duration `json:"poll,omitempty"` // zero: not polled
	Pos      string        `json:"pos,omitempty"`
}
