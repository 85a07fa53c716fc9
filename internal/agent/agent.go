// Package agent is the worker side of the Drover worker protocol
// (internal/workerproto): it enrolls a machine, dials the master over TLS
// with the master's CA pinned by fingerprint, keeps one Connect stream
// open, runs the commands the master sends, and streams their output.
//
// The worker owns a running command: when the stream breaks, the command
// keeps running and its output is kept until a later connection replays
// it and the master acknowledges it. Every command runs in its own
// process group, which is killed when the command ends, times out or is
// cancelled, so no process outlives its step.
//
// On Unix a command also survives the worker process (command_unix.go):
// it runs under a supervisor, `drover __supervise DIR/run/<command-id>`
// (Supervise), that spools its output and exit status to that directory.
// The agent cuts the spool into numbered chunks, recording each chunk's
// place in an index before sending it, and records the master's
// acknowledgements; a new worker process on the same directory adopts
// the commands it finds there, lists them in its hello, replays the
// unacknowledged chunks under the same numbers, and kills the process
// groups of those the master no longer wants. Stopping the worker (Run's
// context ending) still kills its commands; only a worker that dies
// leaves them running. On Windows commands run in the worker process,
// with their output in memory (command_windows.go).
//
// A worker may list the several masters of a site (masters sharing one
// database, with certificates of one CA): it holds a stream to one of them
// at a time, and when that one is unreachable or its stream breaks it
// moves on to the next (rotation), as it does from one that takes the
// connection but does not answer in time; the reconnection goes exactly as
// with a single master: the hello lists the commands it holds, and their
// unacknowledged output is replayed.
//
// The worker's owner decides when it builds (availability.go): a manual
// setting made through the control socket DIR/control.sock (control.go),
// time windows and a load-average ceiling are evaluated into one
// availability, sent in the hello and in FactsUpdate messages when it
// changes. A change never touches running commands: draining and offline
// only stop new work, which the master enforces.
//
// The package is an island: it imports the root drover package and
// workerproto, nothing of the master's side.
package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/timewindow"
	"github.com/drover-ci/drover/internal/workerproto"
)

const (
	enrollTokenPrefix = "drover_enroll_"
	workerTokenPrefix = "drover_worker_"

	// backoffMin and backoffMax bound the wait between connection
	// attempts. It doubles per failure, with full jitter (a uniform wait
	// in [0, bound)), so that a fleet of workers cut off by one master
	// restart does not come back in lockstep, and a master that is down
	// for long is asked once a minute, not hammered.
	//
	// With several masters (a site), the backoff applies to rounds of all
	// of them: only when every master of a round failed does the worker
	// wait so.
	backoffMin = time.Second
	backoffMax = 60 * time.Second
	// failoverSpread bounds the wait before the next master of a site is
	// dialled after a stream to the previous one broke: a uniform wait in
	// [0, failoverSpread), so that the workers of a master that died do
	// not all land on the next one at the same instant, yet fail over in
	// about a second. After a failed dial the next master is tried at once.
	failoverSpread = time.Second
	// backoffReset is how long a connection must have stayed up for the
	// backoff to start again from backoffMin: a master that accepts and
	// then drops every connection at once must still be backed off from.
	backoffReset = time.Minute

	// keepaliveTime and keepaliveTimeout detect a dead master (a NAT that
	// forgot us, a cable pulled) within half a minute. The master's gRPC
	// server must permit it: keepalive.EnforcementPolicy with MinTime at
	// most 20 s and PermitWithoutStream, or it answers "too many pings".
	keepaliveTime    = 20 * time.Second
	keepaliveTimeout = 10 * time.Second

	// Keepalives watch a connection, not the master's process: its gRPC
	// server answers pings even when the handlers are stuck. So every
	// exchange the worker waits on is bounded as well, and a master that
	// accepted the connection but does not answer in time is a failed
	// attempt, as a refused connection is: the worker moves on to the
	// next master of its site (Run). Config.Timeouts overrides them.

	// dialTimeout bounds establishing a connection: TCP connect, TLS
	// handshake and the HTTP/2 settings exchange, a few round trips
	// (well under a second across continents). 15 s also covers the TCP
	// retransmissions of a lossy link (SYN retries at 1, 3 and 7 s), and
	// is as long as an owner should watch `drover worker join` wait.
	dialTimeout = 15 * time.Second
	// welcomeTimeout bounds the wait for the welcome once the stream is
	// open and the hello sent. The master checks the token (a slow hash,
	// then cached), reads the worker's approval and re-attaches the
	// builds the hello lists: a few transactions. 30 s leaves room for a
	// master busy with its whole fleet reconnecting after its restart, yet
	// fails over well within the 2 min a master keeps the builds of a
	// worker that went away. It bounds only this wait: once welcomed, the
	// stream lasts as long as the keepalives find the connection alive.
	welcomeTimeout = 30 * time.Second
	// enrollTimeout bounds the Enroll RPC once connected: the master
	// checks the enrollment token (a slow hash) and stores the worker and
	// its token in one transaction. As welcomeTimeout, for the same
	// reasons.
	enrollTimeout = 30 * time.Second

	// shutdownGrace is the SIGTERM-to-SIGKILL wait for commands when the
	// worker stops: short, because Run must return promptly.
	shutdownGrace = 200 * time.Millisecond
	// finishedRetention is how long a command whose Finished the master
	// acknowledged is still listed in hellos, so that a master that lost
	// the Finished in a broken stream can ask for it again. Longer than a
	// master's re-attach grace period (2 min by default).
	finishedRetention = 10 * time.Minute
	// sendBatch is how many messages of one command are sent before the
	// sender turns to the next command, so one chatty command cannot starve
	// the others.
	sendBatch = 32
)

// Config configures an Agent.
type Config struct {
	Masters       []string          // host:port of the worker (gRPC) port of each master of the site; stored in Dir, so optional once it holds them
	Name          string            // worker name; required on first enrollment, else read from the state file
	Token         string            // enrollment token (prefix "drover_enroll_") or the worker's own token ("drover_worker_"); optional once DIR holds a state file
	Dir           string            // worker directory; builds run under Dir/<builder>/
	CAFingerprint string            // "sha256:<hex>" of the master's CA certificate (DER); optional once DIR holds the pinned CA
	Plaintext     bool              // no TLS; allowed only when every master's host is a loopback address (else New returns an Invalid error)
	Labels        map[string]string // owner's static labels (--label k=v)
	MaxBuilds     int               // commands run at once; default 1
	Version       string            // program version, reported in hello
	Logger        *slog.Logger

	// Schedule, when set, replaces the owner's schedule stored in Dir
	// (time windows, time zone, load ceiling) and is stored in its place;
	// nil keeps the stored one. See LoadSchedule.
	Schedule *Schedule
	// Now is the clock the time windows are read on; default time.Now.
	Now func() time.Time
	// LoadAverage returns the 1-minute load average; default the
	// system's (/proc/loadavg, or sysctl vm.loadavg on macOS and FreeBSD;
	// elsewhere unknown, and the load ceiling is ignored).
	LoadAverage func() (float64, error)
	// Timeouts bound the waits on a master; zero fields take the defaults.
	Timeouts Timeouts
}

// Timeouts bound each wait on a master that would otherwise have no end,
// so that a master that is up but stuck (it accepts connections, maybe
// the stream, and never answers) fails the attempt and the worker moves
// on to the next master. A zero field takes the default named after it.
type Timeouts struct {
	Dial    time.Duration // establishing a connection: TCP, TLS, HTTP/2 settings (dialTimeout, 15 s)
	Welcome time.Duration // from opening the stream to the master's welcome (welcomeTimeout, 30 s)
	Enroll  time.Duration // the Enroll RPC, once connected (enrollTimeout, 30 s)
	// TransferCall bounds one UploadStatus call (transferCallTimeout, 30 s).
	TransferCall time.Duration
	// TransferIdle bounds the time an Upload or Download stream may go
	// without a chunk moving (transferIdleTimeout, 2 min); the whole
	// transfer has no bound but the step's max_time.
	TransferIdle time.Duration
}

// withDefaults returns t with every zero field set to its default.
func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Dial, dialTimeout)
	def(&t.Welcome, welcomeTimeout)
	def(&t.Enroll, enrollTimeout)
	def(&t.TransferCall, transferCallTimeout)
	def(&t.TransferIdle, transferIdleTimeout)
	return t
}

// errNoAnswer marks the error of a master that accepted the connection
// but did not answer in time.
var errNoAnswer = errors.New("master did not answer in time")

// noAnswer is the Unavailable error of the master at addr that did not
// answer what (“the hello”) within d.
func noAnswer(addr, what string, d time.Duration) error {
	return &drover.Error{Kind: drover.Unavailable, Msg: fmt.Sprintf("master %s did not answer %s within %s", addr, what, d), Err: errNoAnswer}
}

// Agent is a worker's connection to its master and the commands it runs.
// Make one with New and call Run once.
type Agent struct {
	cfg     Config
	dir     string   // absolute cfg.Dir
	masters []string // host:port of each master, from cfg or the state file
	log     *slog.Logger

	now         func() time.Time
	loadAverage func() (float64, error)

	// Tunables, fixed by New; tests shorten them.
	backoffMin, backoffMax time.Duration
	failoverSpread         time.Duration
	timeouts               Timeouts
	maxBuffered            int
	availEvery             time.Duration
	// superArgv starts a supervisor, the command directory appended:
	// this program's `__supervise`.
	superArgv []string
	// detachOnStop makes Run return leaving its commands running, as a
	// worker process that dies does: a test hook.
	detachOnStop bool

	running atomic.Bool

	// xfer gives file transfers (transfer.go) the current connection.
	xfer transferLink

	// wake tells the session's sender that some command has output or a
	// Finished to send. Buffered, so notifying never blocks.
	wake chan struct{}
	// cmdWG counts the goroutines of every command; Run waits for it.
	cmdWG sync.WaitGroup

	stateMu     sync.Mutex
	st          state
	enrollToken string            // set while enrollment is still to do
	ca          *x509.Certificate // the pinned CA, once known

	mu       sync.Mutex
	cmds     map[string]*command
	stopping bool // no new commands: Run is returning

	// steps holds what running commands published about their steps
	// (stepupdate.go), until sent.
	steps stepUpdates

	// evalMu serializes evaluations of the availability and changes of
	// the manual setting; it is held while the load is read, availMu never.
	evalMu     sync.Mutex
	loadWarned bool // the load is unreadable and the owner was told

	probes         *probeState          // the master's probes and their latest results
	enrolledProbes []*workerproto.Probe // the probes the enrollment answer carried

	availMu  sync.Mutex
	settings settings           // the owner's manual setting and schedule
	avail    AvailabilityStatus // the latest evaluation
	availGen uint64             // grows with each change of avail's value or reason
}

// New validates cfg, creates cfg.Dir (mode 0700) and loads the worker's
// state from it, storing cfg.Schedule if set. It does no network I/O; it
// fails with a Conflict if a worker process already runs in cfg.Dir.
func New(cfg Config) (*Agent, error) {
	a := &Agent{
		probes:         newProbeState(),
		cfg:            cfg,
		log:            cfg.Logger,
		backoffMin:     backoffMin,
		backoffMax:     backoffMax,
		failoverSpread: failoverSpread,
		timeouts:       cfg.Timeouts.withDefaults(),
		maxBuffered:    defaultMaxBuffered,
		availEvery:     availabilityEvery,
		now:            cfg.Now,
		loadAverage:    cfg.LoadAverage,
		wake:           make(chan struct{}, 1),
		cmds:           make(map[string]*command),
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.loadAverage == nil {
		a.loadAverage = systemLoadAverage
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("component", "agent")
	if cfg.Dir == "" {
		return nil, drover.Errorf(drover.Invalid, "no worker directory")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, drover.Errorf(drover.Invalid, "worker directory %q: %w", cfg.Dir, err)
	}
	a.dir = dir
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program, to supervise commands: %w", err)
	}
	a.superArgv = []string{exe, "__supervise"}
	if cfg.MaxBuilds < 0 {
		return nil, drover.Errorf(drover.Invalid, "max builds %d: must be at least 1", cfg.MaxBuilds)
	}
	if a.cfg.MaxBuilds == 0 {
		a.cfg.MaxBuilds = 1
	}
	for k := range cfg.Labels {
		if k == "" {
			return nil, drover.Errorf(drover.Invalid, "label with an empty name")
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create worker directory: %w", err)
	}
	// Before anything is written: a second `worker run` on a busy
	// directory must not rewrite the running worker's settings.
	if err := checkNoWorker(dir); err != nil {
		return nil, err
	}
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}

	if cfg.Name != "" && st.Name != "" && cfg.Name != st.Name {
		return nil, drover.Errorf(drover.Invalid, "%s belongs to worker %q, not %q: use another directory for another worker", dir, st.Name, cfg.Name)
	}
	if cfg.Name != "" {
		st.Name = cfg.Name
	}
	if masters := cleanMasters(cfg.Masters); len(masters) > 0 {
		st.Masters = masters
	}
	if err := checkMasters(st.Masters, cfg.Plaintext); err != nil {
		return nil, err
	}
	a.masters = slices.Clone(st.Masters)

	switch tok := cfg.Token; {
	case tok == "":
		if st.Token == "" {
			return nil, drover.Errorf(drover.Invalid, "no token: %s holds no worker token, so pass an enrollment token (%s…)", dir, enrollTokenPrefix)
		}
	case strings.HasPrefix(tok, workerTokenPrefix):
		st.Token = tok
	case strings.HasPrefix(tok, enrollTokenPrefix):
		if st.Token == "" {
			a.enrollToken = tok
		} else {
			a.log.Info("already enrolled; ignoring the enrollment token", "worker", st.Name, "token", tokenHint(st.Token))
		}
	default:
		return nil, drover.Errorf(drover.Invalid, "token must start with %q or %q", enrollTokenPrefix, workerTokenPrefix)
	}
	if st.Name == "" {
		return nil, drover.Errorf(drover.Invalid, "no worker name: pass one on first enrollment")
	}

	if !cfg.Plaintext {
		if cfg.CAFingerprint != "" {
			pin, err := parseFingerprint(cfg.CAFingerprint)
			if err != nil {
				return nil, err
			}
			st.CAFingerprint = pin
		}
		ca, err := loadCA(dir)
		if err != nil {
			return nil, err
		}
		if ca != nil && st.CAFingerprint != "" && fingerprint(ca.Raw) != st.CAFingerprint {
			// A new pin (the master's CA was replaced): trust the pin, and
			// store its CA once a connection verifies it.
			a.log.Info("pinned CA differs from the stored one; re-pinning", "pin", st.CAFingerprint)
			ca = nil
		}
		if ca == nil && st.CAFingerprint == "" {
			return nil, drover.Errorf(drover.Invalid, "no CA fingerprint: pass the sha256 fingerprint of the master's CA, as `drover master init` printed it")
		}
		a.ca = ca
	}
	if cfg.Schedule != nil {
		st.Availability = nil
		if !cfg.Schedule.IsZero() {
			sched := *cfg.Schedule
			sched.Windows = append([]timewindow.Window(nil), sched.Windows...)
			st.Availability = &sched
		}
	}
	var sched Schedule
	if st.Availability != nil {
		sched = *st.Availability
	}
	loc, err := sched.location()
	if err != nil {
		return nil, err
	}
	manual, err := loadManual(dir)
	if err != nil {
		return nil, err
	}
	a.settings = settings{manual: manual, sched: sched, loc: loc}

	if err := saveState(dir, st); err != nil {
		return nil, err
	}
	a.st = st
	return a, nil
}

// cleanMasters trims the addresses and drops empty and repeated ones.
func cleanMasters(addrs []string) []string {
	var out []string
	for _, addr := range addrs {
		if addr = strings.TrimSpace(addr); addr != "" && !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	return out
}

// checkMasters validates the masters' addresses: host:port each, and
// plaintext only if every host is a loopback address.
func checkMasters(addrs []string, plaintext bool) error {
	if len(addrs) == 0 {
		return drover.Errorf(drover.Invalid, "no master address (host:port)")
	}
	for _, addr := range addrs {
		host, _, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return drover.Errorf(drover.Invalid, "master address %q: want host:port", addr)
		}
		if plaintext && !isLoopback(host) {
			return drover.Errorf(drover.Invalid, "plaintext connection to %s refused: tokens would cross the network in the clear; plaintext is allowed only to a loopback address", host)
		}
	}
	return nil
}

// isLoopback reports whether host names this machine: "localhost" or a
// loopback IP.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tokenHint is what may be logged of a token: its first 16 characters.
func tokenHint(tok string) string {
	if len(tok) <= 16 {
		return strings.Repeat("*", len(tok))
	}
	return tok[:16] + "…"
}

// Run enrolls if needed, connects, serves commands, and reconnects with
// jittered exponential backoff until ctx is done. With several masters it
// starts with the first, moves to the next one when a connection fails or
// a stream breaks, starts each new round with the last that held a
// stream, and backs off only after a round in which every master failed.
// A master that takes the connection but does not answer in time (the
// handshake, the enrollment, the hello: Config.Timeouts) fails the
// attempt as a refused connection does. It returns nil on ctx cancellation, or an error that retrying cannot fix
// (authentication refused: a wrong/expired/revoked token; a CA fingerprint
// mismatch on every master), with a clear message. When it returns, every
// command it started has been killed and waited for.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return drover.Errorf(drover.Conflict, "agent is already running")
	}
	defer a.running.Store(false)

	ctl, err := a.listenControl()
	if err != nil {
		return err
	}
	defer func() {
		if err := ctl.Close(); err != nil {
			a.log.Warn("closing the control socket", "err", err)
		}
	}()
	if err := a.reloadManual(); err != nil {
		a.log.Error("keeping the manual availability read at start", "err", err)
	}
	a.reevaluate() // before the first hello, which carries it
	// Before the first hello too, which lists the commands adopted.
	a.recover()
	a.recoverStepUpdates()
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.watchAvailability(wctx) })
	defer wg.Wait()
	defer wcancel()
	defer a.stop()

	rot := rotation{n: len(a.masters), backoff: a.backoff, spread: a.failoverSpread}
	untrusted := map[string]error{}
	for {
		addr := a.masters[rot.next]
		res, err := a.session(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		switch k := drover.KindOf(err); {
		case res.untrusted:
			// Final for this master, but another master of the site
			// may present a certificate of the pinned CA.
			untrusted[addr] = err
			if len(untrusted) == len(a.masters) {
				a.log.Error("giving up: no master presents a certificate of the pinned CA", "err", err)
				return err
			}
			a.log.Error("master not trusted; trying the others", "master", addr, "err", err)
		case k == drover.Unauthorized || k == drover.Invalid:
			a.log.Error("giving up: the master refused this worker", "master", addr, "err", err)
			return err
		}
		if res.connected {
			delete(untrusted, addr)
		}
		delay := rot.ended(res)
		next := a.masters[rot.next]
		if errors.Is(err, errNoAnswer) {
			// Alive but stuck: say so plainly, it is not a network error.
			msg := fmt.Sprintf("%v; trying %s", err, next)
			if delay > 0 {
				msg += fmt.Sprintf(" in %s", delay.Round(time.Millisecond))
			}
			a.log.Warn(msg, "master", addr, "next", next, "retry_in", delay.Round(time.Millisecond))
		} else {
			a.log.Warn("connection to master failed", "master", addr, "err", err, "next", next, "retry_in", delay.Round(time.Millisecond))
		}
		if delay == 0 {
			continue
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// rotation decides which master a worker dials next, and how long it
// waits first. Every session that ends is a failure of its master unless
// its stream stayed up for backoffReset. After a failure the next master
// is dialled: at once after a refused dial, within spread after a broken
// stream. Once the masters of a round have all failed, the worker backs
// off (longer for each such round in a row) and starts the next round with
// the last master that held a stream. With one master this is the plain
// backoff between attempts.
type rotation struct {
	n       int                            // masters
	backoff func(rounds int) time.Duration // the wait after that many failed rounds in a row
	spread  time.Duration                  // bound of the wait after a broken stream

	next   int // the master to dial
	last   int // the last master that held a stream
	tries  int // failures in this round
	rounds int // failed rounds in a row
}

// ended records the end of a session with master next, moves next on, and
// returns the wait before dialling it.
func (r *rotation) ended(res sessionResult) time.Duration {
	if res.connected {
		r.last = r.next
	}
	if res.up > backoffReset {
		r.tries, r.rounds = 0, 0
	}
	if r.tries++; r.tries < r.n {
		r.next = (r.next + 1) % r.n
		if res.connected {
			return rand.N(r.spread) + time.Millisecond
		}
		return 0
	}
	delay := r.backoff(r.rounds)
	r.tries, r.next = 0, r.last
	r.rounds++
	return delay
}

// backoff is the wait after the given number of consecutive failures:
// uniform in [0, min(backoffMax, backoffMin·2^failures)).
func (a *Agent) backoff(failures int) time.Duration {
	bound := a.backoffMax
	if failures < 30 && a.backoffMin<<failures < a.backoffMax {
		bound = a.backoffMin << failures
	}
	return rand.N(bound) + time.Millisecond
}

// stop kills every command and waits for them: the worker is going away
// on purpose. (A worker that dies leaves its commands to the next one.)
func (a *Agent) stop() {
	a.xfer.stop()
	a.mu.Lock()
	a.stopping = true
	cmds := make([]*command, 0, len(a.cmds))
	for _, c := range a.cmds {
		cmds = append(cmds, c)
	}
	a.mu.Unlock()
	for _, c := range cmds {
		if a.detachOnStop {
			c.detach()
		} else {
			c.abandon("worker stopping: killed", shutdownGrace)
		}
	}
	a.cmdWG.Wait()
	for _, c := range cmds {
		c.closeFiles()
	}
	a.mu.Lock()
	a.cmds = make(map[string]*command)
	a.stopping = false
	a.mu.Unlock()
}

// notify wakes the sender; it never blocks.
func (a *Agent) notify() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// sessionResult is how a session ended, besides its error.
type sessionResult struct {
	connected bool          // the master welcomed the worker: the stream was established
	up        time.Duration // how long the stream was up
	untrusted bool          // the master's certificate failed verification: retrying it cannot help
}

// session makes one connection to the master at addr: enroll if needed,
// hello, welcome, then serve until the stream breaks or ctx ends.
func (a *Agent) session(ctx context.Context, addr string) (sessionResult, error) {
	host, _, _ := net.SplitHostPort(addr) // checked by New
	a.stateMu.Lock()
	v := &verifier{host: host, ca: a.ca, pin: a.st.CAFingerprint, pinned: a.pinCA}
	a.stateMu.Unlock()
	creds := insecure.NewCredentials()
	if !a.cfg.Plaintext {
		creds = credentials.NewTLS(v.tlsConfig())
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                keepaliveTime,
			Timeout:             keepaliveTimeout,
			PermitWithoutStream: true,
		}),
	)
	if err != nil {
		return sessionResult{}, drover.Errorf(drover.Invalid, "master address %q: %w", addr, err)
	}
	defer conn.Close()
	// The TLS verdict explains a failure better than gRPC's "connection
	// error", and it is final for this master.
	fail := func(err error) (sessionResult, error) {
		if f := v.failure(); f != nil {
			return sessionResult{untrusted: true}, f
		}
		return sessionResult{}, err
	}
	if err := waitConnected(ctx, conn, addr, a.timeouts.Dial); err != nil {
		return fail(err)
	}
	client := workerproto.NewWorkerClient(conn)
	a.xfer.set(client)
	defer a.xfer.set(nil)

	if err := a.enroll(ctx, client, addr); err != nil {
		return fail(err)
	}

	// Until the welcome, the stream is bounded by the welcome timeout;
	// after it, only the keepalives watch it, for as long as it lasts.
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errNoWelcome := noAnswer(addr, "the hello", a.timeouts.Welcome)
	noWelcome := time.AfterFunc(a.timeouts.Welcome, func() { cancel(errNoWelcome) })
	defer noWelcome.Stop()
	stream, err := client.Connect(sctx)
	if err != nil {
		if context.Cause(sctx) == errNoWelcome {
			return fail(errNoWelcome)
		}
		return fail(fmt.Errorf("connect to %s: %w", addr, err))
	}
	hello, availGen := a.hello()
	if err := stream.Send(&workerproto.WorkerMessage{Msg: &workerproto.WorkerMessage_Hello{Hello: hello}}); err != nil {
		_, rerr := stream.Recv() // the stream's real error, if the master closed it
		if context.Cause(sctx) == errNoWelcome {
			return fail(errNoWelcome)
		}
		return fail(connectError("send hello", errors.Join(err, rerr)))
	}
	first, err := stream.Recv()
	// Stop fails once the timer fired: then the stream is cancelled,
	// whatever Recv returned.
	if !noWelcome.Stop() {
		return fail(errNoWelcome)
	}
	if err != nil {
		return fail(connectError("wait for welcome", err))
	}
	welcome := first.GetWelcome()
	if welcome == nil {
		return sessionResult{}, fmt.Errorf("master %s sent %T before welcome; reconnecting", addr, first.GetMsg())
	}
	connected := time.Now()
	a.adopt(welcome.GetKeep())
	a.steps.resendAll() // the last stream may have lost them
	a.log.Info("connected to master", "master", addr, "worker", welcome.GetWorkerName(),
		"master_version", welcome.GetMasterVersion(), "protocol", welcome.GetProtocolVersion(), "kept", len(welcome.GetKeep()))

	a.probes.set(welcome.GetProbes(), time.Duration(welcome.GetProbeIntervalMs())*time.Millisecond)
	_, probeGen := a.probes.results()

	g, gctx := errgroup.WithContext(sctx)
	g.Go(func() error {
		a.runProbes(gctx, a.notify)
		return nil
	})
	g.Go(func() error {
		err := a.send(gctx, stream, availGen, probeGen)
		cancel(nil) // a broken send ends the stream, and so the receiver
		return err
	})
	g.Go(func() error {
		err := a.receive(stream)
		cancel(nil) // stop the sender
		return err
	})
	err = g.Wait()
	res := sessionResult{connected: true, up: time.Since(connected)}
	if ctx.Err() != nil {
		return res, nil
	}
	return res, fmt.Errorf("stream to %s broke after %s: %w", addr, res.up.Round(time.Second), err)
}

// connectError makes a refusal of the worker's credentials permanent.
func connectError(what string, err error) error {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		return drover.Errorf(drover.Unauthorized, "master refused this worker (%s): %s; the token is wrong, expired or revoked: enroll again with a new enrollment token", what, status.Convert(err).Message())
	}
	return fmt.Errorf("%s: %w", what, err)
}

// waitConnected connects conn to the master at addr and waits, at most
// d, until the connection is established (TCP, TLS, HTTP/2 settings) or
// has failed outright (refused, the certificate rejected): then the
// first RPC fails at once with gRPC's reason. Only a master that lets the
// handshake hang is an error here, a noAnswer one.
func waitConnected(ctx context.Context, conn *grpc.ClientConn, addr string, d time.Duration) error {
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	conn.Connect()
	for {
		switch s := conn.GetState(); s {
		case connectivity.Ready, connectivity.TransientFailure:
			return nil
		case connectivity.Shutdown:
			return fmt.Errorf("connect to %s: connection closed", addr)
		default:
			if !conn.WaitForStateChange(dctx, s) {
				if err := ctx.Err(); err != nil {
					return err
				}
				return noAnswer(addr, "the connection handshake", d)
			}
		}
	}
}

// enroll trades the enrollment token for the worker's own token, once,
// with the master at addr.
func (a *Agent) enroll(ctx context.Context, client workerproto.WorkerClient, addr string) error {
	a.stateMu.Lock()
	tok, name := a.enrollToken, a.st.Name
	a.stateMu.Unlock()
	if tok == "" {
		return nil
	}
	a.log.Info("enrolling", "worker", name, "master", addr, "token", tokenHint(tok))
	ectx, cancel := context.WithTimeout(ctx, a.timeouts.Enroll)
	defer cancel()
	resp, err := client.Enroll(ectx, &workerproto.EnrollRequest{
		Name:            name,
		EnrollmentToken: tok,
		ProgramVersion:  a.cfg.Version,
		Os:              runtime.GOOS,
		Arch:            runtime.GOARCH,
	})
	if err != nil {
		switch status.Code(err) {
		case codes.Unauthenticated, codes.PermissionDenied:
			return drover.Errorf(drover.Unauthorized, "enrollment refused: %s; the enrollment token is wrong, expired, used up or revoked", status.Convert(err).Message())
		case codes.InvalidArgument, codes.AlreadyExists:
			return drover.Errorf(drover.Invalid, "enrollment refused: %s", status.Convert(err).Message())
		}
		// The master, which got the deadline with the call, may end it
		// a little before the worker's own timer does.
		if ctx.Err() == nil && (errors.Is(ectx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded) {
			return noAnswer(addr, "the enrollment", a.timeouts.Enroll)
		}
		return drover.Errorf(drover.Unavailable, "enroll with master %s: %w", addr, err)
	}
	if resp.GetToken() == "" {
		return fmt.Errorf("enroll: master returned no token")
	}
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	st := a.st
	st.Token = resp.GetToken()
	if n := resp.GetWorkerName(); n != "" {
		st.Name = n
	}
	if err := saveState(a.dir, st); err != nil {
		return fmt.Errorf("store worker token: %w", err)
	}
	a.st, a.enrollToken = st, ""
	a.enrolledProbes = resp.GetProbes()
	a.log.Info("enrolled", "worker", st.Name, "token", tokenHint(st.Token))
	return nil
}

// pinCA stores the CA a first connection verified by its fingerprint;
// later connections trust it without the pin.
func (a *Agent) pinCA(ca *x509.Certificate) error {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if a.ca != nil && a.ca.Equal(ca) {
		return nil
	}
	if err := saveCA(a.dir, ca); err != nil {
		return err
	}
	a.ca = ca
	a.log.Info("pinned the master's CA", "fingerprint", fingerprint(ca.Raw), "file", filepath.Join(a.dir, caFileName))
	return nil
}

// hello describes this worker and the commands it still holds, and
// returns the generation of the availability it carries.
func (a *Agent) hello() (*workerproto.Hello, uint64) {
	a.stateMu.Lock()
	name, tok := a.st.Name, a.st.Token
	a.stateMu.Unlock()
	facts := a.allFacts()
	h := &workerproto.Hello{
		Name:            name,
		Token:           tok,
		ProtocolVersion: workerproto.ProtocolVersion,
		ProgramVersion:  a.cfg.Version,
		Os:              runtime.GOOS,
		Arch:            runtime.GOARCH,
		Facts:           facts,
		Labels:          a.cfg.Labels,
		MaxBuilds:       uint32(a.cfg.MaxBuilds),
	}
	avail, gen := a.availability()
	h.Availability, h.AvailabilityReason = string(avail.Availability), avail.Reason
	if h.Availability == "" { // not evaluated yet: Run evaluates before it dials
		h.Availability = string(drover.Eager)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, c := range a.cmds {
		if d := c.deliveredAt(); !d.IsZero() && time.Since(d) > finishedRetention {
			delete(a.cmds, id)
			c.dispose()
			continue
		}
		h.Running = append(h.Running, c.held())
	}
	return h, gen
}

// adopt applies a welcome: commands the master keeps are replayed on the
// new stream; the others are killed and forgotten.
func (a *Agent) adopt(keep []string) {
	kept := make(map[string]bool, len(keep))
	for _, id := range keep {
		kept[id] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, c := range a.cmds {
		if kept[id] {
			c.resume()
			continue
		}
		delete(a.cmds, id)
		if c.deliveredAt().IsZero() {
			a.log.Info("master no longer wants command; killing it", "command", id)
		}
		a.cmdWG.Add(1)
		go func() {
			defer a.cmdWG.Done()
			c.abandon("not wanted by the master after reconnect: killed", c.killGrace())
		}()
	}
	a.notify()
}

// send is the stream's only writer: it sends every command's unsent
// output and Finished messages, in order per command, and a FactsUpdate
// whenever the availability moves past availGen, the generation the
// master last heard (in the hello).
func (a *Agent) send(ctx context.Context, stream workerproto.Worker_ConnectClient, availGen, probeGen uint64) error {
	for {
		if _, gen := a.probes.results(); gen != probeGen {
			st, _ := a.availability()
			up := &workerproto.FactsUpdate{Facts: a.allFacts(), Availability: string(st.Availability), AvailabilityReason: st.Reason}
			if err := stream.Send(&workerproto.WorkerMessage{Msg: &workerproto.WorkerMessage_Facts{Facts: up}}); err != nil {
				return fmt.Errorf("send facts: %w", err)
			}
			probeGen = gen
		}
		if st, gen := a.availability(); gen != availGen {
			if err := stream.Send(availabilityUpdate(st)); err != nil {
				return fmt.Errorf("send availability: %w", err)
			}
			availGen = gen
		}
		a.mu.Lock()
		cmds := make([]*command, 0, len(a.cmds))
		for _, c := range a.cmds {
			cmds = append(cmds, c)
		}
		a.mu.Unlock()
		more := false
		var msgs []*workerproto.WorkerMessage
		for _, c := range cmds {
			batch := c.unsent(sendBatch)
			more = more || len(batch) == sendBatch
			msgs = append(msgs, batch...)
		}
		// Step updates are taken after the commands' messages and sent
		// before them: an update published before its command ended
		// reaches the master before the command's Finished.
		msgs = append(a.takeStepUpdates(), msgs...)
		for _, m := range msgs {
			if err := stream.Send(m); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
		if more {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.wake:
		}
	}
}

// receive handles the master's messages until the stream breaks.
func (a *Agent) receive(stream workerproto.Worker_ConnectClient) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		switch msg := m.GetMsg().(type) {
		case *workerproto.MasterMessage_Run:
			a.start(msg.Run)
		case *workerproto.MasterMessage_Cancel:
			a.cancel(msg.Cancel)
		case *workerproto.MasterMessage_Ack:
			a.ack(msg.Ack)
		case *workerproto.MasterMessage_SetProbes:
			a.probes.set(msg.SetProbes.GetProbes(), time.Duration(msg.SetProbes.GetProbeIntervalMs())*time.Millisecond)
		case *workerproto.MasterMessage_Welcome:
			a.log.Warn("ignoring a second welcome")
		default:
			// A newer master may send messages this worker does not know;
			// the protocol only grows, so ignoring them is safe.
			a.log.Debug("ignoring unknown message from master", "type", fmt.Sprintf("%T", msg))
		}
	}
}

// start starts a command the master sent. The master decides how many
// run at once: a worker past its MaxBuilds still starts what it is sent.
func (a *Agent) start(req *workerproto.RunCommand) {
	id := req.GetCommandId()
	if id == "" {
		a.log.Warn("ignoring a command without an id")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping {
		return
	}
	if _, dup := a.cmds[id]; dup {
		a.log.Warn("ignoring a duplicate command", "command", id)
		return
	}
	a.commandEnv(req)
	c := newCommand(req, a.log, a.notify, a.maxBuffered)
	a.cmds[id] = c
	a.cmdWG.Add(1)
	go func() {
		defer a.cmdWG.Done()
		switch {
		case req.GetTransfer() != nil:
			a.runTransfer(c)
			return
		case req.GetCheckout() != nil:
			a.runCheckout(c)
			return
		}
		c.run(a.dir, a.superArgv)
	}()
}

func (a *Agent) cancel(m *workerproto.Cancel) {
	a.mu.Lock()
	c := a.cmds[m.GetCommandId()]
	a.mu.Unlock()
	if c == nil {
		a.log.Info("cancel for an unknown command", "command", m.GetCommandId())
		return
	}
	text := "cancelled: killed"
	if r := m.GetReason(); r != "" {
		text = "cancelled (" + r + "): killed"
	}
	// kill waits for the supervisor, which never blocks for long; do not
	// hold up the stream's reader for it all the same.
	a.cmdWG.Add(1)
	go func() {
		defer a.cmdWG.Done()
		c.kill(killRequest{reason: workerproto.FinishReason_FINISH_REASON_CANCELLED, text: text, grace: c.killGrace()})
	}()
}

func (a *Agent) ack(m *workerproto.Ack) {
	a.mu.Lock()
	c := a.cmds[m.GetCommandId()]
	a.mu.Unlock()
	if c == nil {
		return
	}
	c.ack(m.GetSeq())
	// The master stored the Finished: nothing is left to replay, so the
	// command need not wait out finishedRetention.
	if m.GetFinished() && c.deliveredAt() != (time.Time{}) {
		a.mu.Lock()
		mine := a.cmds[m.GetCommandId()] == c
		if mine {
			delete(a.cmds, m.GetCommandId())
		}
		a.mu.Unlock()
		if mine {
			c.dispose()
		}
	}
}
