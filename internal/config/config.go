package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/timewindow"
)

// Config is a loaded, validated master.star: plain values with no Starlark
// left in them.
type Config struct {
	Master Master `json:"master"`
	// Sources are in definition order; Name defaults to the URL's base name
	// without .git and is unique.
	Sources []drover.GitSource `json:"sources"`
	// Builders are in definition order.
	Builders   []drover.Builder `json:"builders"`
	Schedulers []Scheduler      `json:"schedulers"`
	Probes     []Probe          `json:"probes"`
	// Locks are the declared counting semaphores, in definition order.
	Locks []drover.LockDef `json:"locks"`
	// Workers are the master's settings for named workers, by name.
	Workers []WorkerConfig `json:"workers"`
	// Hash is the hex sha256 over the contents of every file loaded, in load
	// order; the master compares it to tell whether a reload changes anything.
	Hash string `json:"hash"`
	// Files are the absolute paths of the files loaded, the main file first.
	Files []string `json:"files"`

	// byName indexes Builders, made on first use: a config is never
	// changed once loaded.
	indexOnce sync.Once
	byName    map[string]int
	// workerIndex indexes Workers the same way: the master asks for a
	// worker's facts and downtime for every connected worker, every round.
	workerOnce  sync.Once
	workerIndex map[string]int
}

// Master is how the master process itself runs.
type Master struct {
	Title string `json:"title"` // default "Drover"
	// URL is the public base URL of the web UI; "" lets the master derive it
	// from its listen address.
	URL     string `json:"url"`
	HTTP    string `json:"http"`    // web/API listen address, default ":8010"
	Workers string `json:"workers"` // gRPC listen address for workers, default ":9989"
	// Database is "" for SQLite state.sqlite in the master directory, else a DSN.
	Database string `json:"database"`
	// LogMaxBytes caps each log (default 64 MiB); output beyond it is cut
	// from the middle, keeping head and tail.
	LogMaxBytes int64 `json:"log_max_bytes"`
	// LogHorizon expires the logs of builds older than this (default 30
	// days); 0 keeps them forever.
	LogHorizon time.Duration `json:"log_horizon"`
	// ArtifactHorizon expires uploaded artifacts older than this (default
	// 30 days); 0 keeps them forever.
	ArtifactHorizon time.Duration `json:"artifact_horizon"`
	// WorkerGrace is how long a vanished worker's build waits for it to come
	// back before ending as retry (default 2m).
	WorkerGrace time.Duration `json:"worker_grace"`
	// MaxRetries is how many tries a request ending in retry gets (default 3).
	MaxRetries int `json:"max_retries"`
	// PublicReads allows reads without a token (default true).
	PublicReads bool `json:"public_reads"`
	// AllowPlaintext accepts workers without TLS on any interface, not just
	// loopback (default false).
	AllowPlaintext bool `json:"allow_plaintext"`
	// ApproveWorkers holds each worker that enrolls with an enrollment
	// token as pending until an admin approves it (default false: enrolled
	// workers may connect at once). Workers given their own token by an
	// admin need no approval.
	ApproveWorkers bool `json:"approve_workers,omitempty"`
	// ReluctantAfter lets a reluctant worker take a request that has waited
	// this long even though an eager worker could take it later (default
	// 0: only when no eager worker online is eligible).
	ReluctantAfter time.Duration `json:"reluctant_after,omitempty"`
	// ExpireAfter cancels a pending request that has had no eligible worker
	// online for this long (default 0: never); builders may set their own.
	ExpireAfter time.Duration `json:"expire_after,omitempty"`
	// ProbeInterval is how often workers run the probes again (default
	// 30m); they also run them at connect and when the probes change.
	ProbeInterval time.Duration `json:"probe_interval,omitempty"`
	// StopGrace is how long a stopping master (SIGTERM, Ctrl-C) lets running
	// builds finish before stopping them (default 0: at once; they run
	// again after the restart).
	StopGrace time.Duration `json:"stop_grace,omitempty"`
	// SharedDir holds the logs and artifacts, relative to the master's
	// directory when not absolute (default: the master's directory). The
	// masters of a site (several masters on one PostgreSQL database) must
	// all name one shared directory, e.g. a network file system, so that
	// each serves every build's logs.
	SharedDir string `json:"shared_dir,omitempty"`
	// Timezone is the IANA zone the config's time windows are read in
	// when neither the window nor its drover.worker names one (default:
	// UTC, never the machine's local time, so that every master of a site
	// and checkconfig on a laptop read a window alike).
	Timezone string `json:"timezone,omitempty"`
	// SiteTimeout is how long a master of a site may go without a
	// heartbeat before the others take over its running builds (default
	// 15s). A master that could not beat for this long stops driving its
	// builds, as the others may have taken them.
	SiteTimeout time.Duration `json:"site_timeout,omitempty"`
}

// Scheduler turns changes on a source into build requests.
type Scheduler struct {
	Name       string `json:"name"`
	Source     string `json:"source"`     // name of the GitSource it watches
	Repository string `json:"repository"` // that source's URL
	Branch     string `json:"branch"`     // exact branch; "" means any branch of the source
	// Builders are resolved names; "*" in the config becomes every builder
	// the config defines, wherever it defines it.
	Builders []string `json:"builders"`
	// TreeStable waits this long after the last change before requesting
	// builds; 0 requests at once.
	TreeStable time.Duration `json:"tree_stable"`
	Pos        string        `json:"pos"`
}

// Probe is a command every worker runs; its trimmed output becomes the fact
// Name.
type Probe struct {
	Name    string        `json:"name"` // a fact name, [a-z0-9_.-]+
	Command string        `json:"command"`
	Timeout time.Duration `json:"timeout"` // default 30s
	Pos     string        `json:"pos"`
}

// Defaults for Master; the config overrides any of them in drover.master().
const (
	DefaultTitle       = "Drover"
	DefaultHTTP        = ":8010"
	DefaultWorkers     = ":9989"
	DefaultLogMaxBytes = 64 << 20
	DefaultLogHorizon  = 30 * 24 * time.Hour
	// DefaultArtifactHorizon is how long uploaded artifacts are kept.
	DefaultArtifactHorizon = 30 * 24 * time.Hour
	DefaultWorkerGrace     = 2 * time.Minute
	DefaultMaxRetries      = 3
	DefaultProbeTime       = 30 * time.Second
	DefaultKillGrace       = 10 * time.Second
	DefaultSiteTimeout     = 15 * time.Second
	// MaxSteps bounds the Starlark execution steps of one load, so that an
	// endless loop in a config fails a reload instead of hanging the master.
	// Ten million steps is far more than a large matrix needs and well under
	// a second of CPU.
	MaxSteps = 10_000_000
)

// MainFile is the file Load reads when given a directory.
const MainFile = "master.star"

func defaultMaster() Master {
	return Master{
		Title:           DefaultTitle,
		HTTP:            DefaultHTTP,
		Workers:         DefaultWorkers,
		LogMaxBytes:     DefaultLogMaxBytes,
		LogHorizon:      DefaultLogHorizon,
		ArtifactHorizon: DefaultArtifactHorizon,
		WorkerGrace:     DefaultWorkerGrace,
		MaxRetries:      DefaultMaxRetries,
		PublicReads:     true,
		SiteTimeout:     DefaultSiteTimeout,
	}
}

// Load reads the config at path: a file, or a directory holding master.star.
// load("other.star", "sym") may read files relative to the loading file, but
// never outside the config's directory.
//
// A config that does not load or does not validate gives an error of kind
// drover.Invalid whose text is one "file:line[:col]: message" line per
// problem; errors.As finds the ErrorList in it. A missing file gives kind
// drover.NotFound.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, drover.Errorf(drover.Invalid, "config %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, readError(path, err)
	}
	if fi.IsDir() {
		abs = filepath.Join(abs, MainFile)
	}
	src, err := os.ReadFile(abs)
	if err != nil {
		return nil, readError(abs, err)
	}
	return load(abs, src)
}

// LoadSource is Load with the main file's content given (for tests and
// fuzzing). filename is used in positions, and load() resolves relative to
// filepath.Dir(filename).
func LoadSource(filename string, src []byte) (*Config, error) {
	abs, err := filepath.Abs(filename)
	if err != nil {
		return nil, drover.Errorf(drover.Invalid, "config %s: %w", filename, err)
	}
	return load(abs, src)
}

func readError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return drover.Errorf(drover.NotFound, "config %s: %w", path, err)
	}
	return drover.Errorf(drover.Invalid, "config %s: %w", path, err)
}

// Builder returns the builder called name.
func (c *Config) Builder(name string) (*drover.Builder, bool) {
	c.indexOnce.Do(func() {
		c.byName = make(map[string]int, len(c.Builders))
		for i := range c.Builders {
			c.byName[c.Builders[i].Name] = i
		}
	})
	i, ok := c.byName[name]
	if !ok {
		return nil, false
	}
	return &c.Builders[i], true
}

// WorkerDowntime returns the downtime windows the config sets for worker
// name, each read in its own zone or the set's: the worker's timezone,
// else the master's, else UTC. A worker without any has an empty set.
func (c *Config) WorkerDowntime(name string) timewindow.Set {
	if w := c.worker(name); w != nil {
		return timewindow.Set{Windows: w.Downtime, Zone: w.zone}
	}
	return timewindow.Set{}
}

// worker returns the config's settings for worker name, or nil.
func (c *Config) worker(name string) *WorkerConfig {
	c.workerOnce.Do(func() {
		c.workerIndex = make(map[string]int, len(c.Workers))
		for i := range c.Workers {
			c.workerIndex[c.Workers[i].Name] = i
		}
	})
	if i, ok := c.workerIndex[name]; ok {
		return &c.Workers[i]
	}
	return nil
}

// WorkerFacts returns the facts the config sets for worker name, or nil.
func (c *Config) WorkerFacts(name string) drover.Facts {
	if w := c.worker(name); w != nil {
		return w.Facts
	}
	return nil
}
