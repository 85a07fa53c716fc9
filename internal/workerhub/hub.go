// Package workerhub is the master's side of the worker protocol: it
// authenticates workers, keeps one session per connected worker, sends
// commands, ingests their output and completion into the log store and
// the table of commands in flight (commands.go), serves file transfers,
// and enrolls new workers with a fleet enrollment token.
//
//	worker ──Enroll(enrollment token)──▶ hub ──store.Enroll──▶ new worker token
//	worker ══Connect stream═══════════▶ hub
//	   hello(name, token, facts, running)   → authenticate, Handler.WorkerConnected, keep = held ∩ table
//	   ◀ welcome(keep)
//	   ◀ run / cancel / ack                  ← Session.Send (one sender goroutine)
//	   output(seq) / finished / step update → the command table, the log store (in stream order)
//	   facts                                → Handler.FactsChanged
//
// A malformed or out-of-order message closes that one stream with
// InvalidArgument; the master and every other session carry on. A wrong
// token is refused with Unauthenticated and logged with the peer address,
// and nothing is registered.
//
// When the master requires approval (drover.master(approve_workers =
// True)), a worker that enrolls is stored as pending, and its hellos are
// refused until an admin approves it: with FailedPrecondition while it is
// pending, which the worker retries with backoff, so that approval takes
// effect at its next attempt; with PermissionDenied once it is rejected,
// which makes the worker stop.
package workerhub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/tokens"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// Handler is told of workers coming and going. Calls for one session come
// from that session's goroutines in order; calls for different sessions
// may run concurrently. Each call gets a context that ends with the
// session (WorkerDisconnected's, with the hub's handlerTimeout), and must
// bound what it does by it.
type Handler interface {
	// WorkerConnected is called once a hello is authenticated, before the
	// welcome and before the hub decides which of the worker's held
	// commands to keep (those in its table: a handler that takes a build
	// over tracks its command first). An error refuses the worker: it is
	// told, by the error's kind, to try again (e.g. on another master of
	// the site), and WorkerDisconnected is not called.
	WorkerConnected(ctx context.Context, s *Session, held []*pb.RunningCommand) error
	// WorkerDisconnected is called when the session ends for any reason.
	WorkerDisconnected(ctx context.Context, s *Session, err error)
	// FactsChanged is called after the session's facts or availability
	// changed.
	FactsChanged(ctx context.Context, s *Session)
}

// handlerTimeout bounds each Handler call: a stuck store must not hold a
// worker's hello (the worker gives up and tries another master) or a
// session's receive loop for ever.
const handlerTimeout = 15 * time.Second

// Store is what the hub keeps in the master's store: tokens and workers
// for authentication and enrollment, artifacts for uploads, and the
// progress of command output.
type Store interface {
	GetToken(ctx context.Context, id string) (*drover.Token, error)
	ListTokens(ctx context.Context, kind drover.TokenKind) ([]drover.Token, error)
	GetWorker(ctx context.Context, name string) (*drover.Worker, error)
	Enroll(ctx context.Context, enrollID string, at time.Time, wt *drover.Token, w *drover.Worker) error
	AddArtifact(ctx context.Context, a *drover.Artifact) error
	ListArtifacts(ctx context.Context, buildID int64) ([]drover.Artifact, error)
	SetLogProgress(ctx context.Context, progress []drover.Log) error
	SetStepURL(ctx context.Context, buildID int64, step int, name, url string) error
}

// Options configure a Hub.
type Options struct {
	Store   Store
	Handler Handler
	// Logs receives commands' output; Events is told of links a running
	// command published.
	Logs   Logs
	Events Publisher
	// FlushInterval is how often RunFlusher makes output durable and acks
	// it; 0: DefaultFlushInterval.
	FlushInterval time.Duration
	Logger        *slog.Logger
	Version       string // the master's program version, sent in welcome
	// HelloTimeout bounds the wait for a new stream's hello.
	HelloTimeout time.Duration
	// Probes, if set, gives the probes a welcome carries.
	Probes func() *pb.SetProbes
	Now    func() time.Time
	// RequireApproval reports whether workers that enroll now must wait
	// for an admin's approval. It is asked at each enrollment, so that a
	// reloaded config applies at once. When nil, the Handler is asked if
	// it implements ApprovalPolicy; otherwise approval is not required.
	RequireApproval func() bool
	// ArtifactDir is where uploaded artifacts are kept (DIR/artifacts);
	// FilesDir the directory downloads may read as "files/" (DIR/files).
	// Empty: refused. See transfer.go.
	ArtifactDir, FilesDir string
	// Tokens hashes the secrets of enrolled workers' tokens; the zero
	// value uses bcrypt's default cost.
	Tokens tokens.Hasher
}

// ApprovalPolicy is implemented by a Handler that decides whether newly
// enrolled workers need an admin's approval (the master, from its config).
type ApprovalPolicy interface {
	RequireApproval() bool
}

// Hub implements the Worker gRPC service.
type Hub struct {
	pb.UnimplementedWorkerServer
	store      Store
	handler    Handler
	logs       Logs
	events     Publisher
	flushEvery time.Duration
	cmds       commands
	logger     *slog.Logger
	version    string
	helloTO    time.Duration
	now        func() time.Time
	probes     func() *pb.SetProbes
	// approval reports whether enrolling workers wait for approval.
	approval func() bool

	xfer   *transfers
	tokens tokens.Hasher
	// verified remembers worker tokens whose secret checked out, so that
	// a transfer of many files, or a fleet reconnecting at once, does not
	// pay a bcrypt check per call. The stored row is still read each
	// time, so a revoked or expired token is refused at once.
	verified *tokens.Cache

	mu       sync.Mutex
	sessions map[string]*Session
}

// New makes a Hub.
func New(o Options) *Hub {
	if o.HelloTimeout == 0 {
		o.HelloTimeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.RequireApproval == nil {
		if p, ok := o.Handler.(ApprovalPolicy); ok {
			o.RequireApproval = p.RequireApproval
		} else {
			o.RequireApproval = func() bool { return false }
		}
	}
	return &Hub{
		store: o.Store, handler: o.Handler, logs: o.Logs, events: o.Events, flushEvery: o.FlushInterval,
		cmds: commands{byID: map[string]*Command{}}, logger: o.Logger.With("component", "workerhub"),
		version: o.Version, helloTO: o.HelloTimeout, now: o.Now, probes: o.Probes, approval: o.RequireApproval,
		sessions: make(map[string]*Session), xfer: newTransfers(o.ArtifactDir, o.FilesDir), tokens: o.Tokens,
		verified: tokens.NewCache(verifiedTTL),
	}
}

// verifiedTTL is how long a checked worker secret is trusted without a
// new bcrypt check (the token's row is read every time regardless).
const verifiedTTL = 10 * time.Minute

// Session returns the live session of worker name.
func (h *Hub) Session(name string) (*Session, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.sessions[name]
	return s, ok
}

// Sessions returns every live session.
func (h *Hub) Sessions() []*Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Session, 0, len(h.sessions))
	for _, s := range h.sessions {
		out = append(out, s)
	}
	return out
}

// namePattern is what a worker may be called: it names directories, URLs
// and metrics labels, so keep it tame.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ValidName reports whether name may name a worker.
func ValidName(name string) bool { return namePattern.MatchString(name) }

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

// Enroll registers a new worker with an enrollment token and returns the
// worker's own secret.
func (h *Hub) Enroll(ctx context.Context, req *pb.EnrollRequest) (*pb.EnrollResponse, error) {
	addr := peerAddr(ctx)
	log := h.logger.With("peer", addr, "worker", req.GetName())
	if !ValidName(req.GetName()) {
		log.Warn("enrollment refused: bad worker name")
		return nil, status.Errorf(codes.InvalidArgument, "worker name %q: use letters, digits, '.', '_' and '-', at most 63", req.GetName())
	}
	kind, id, secret, err := tokens.Parse(req.GetEnrollmentToken())
	if err != nil || kind != drover.TokenEnroll {
		log.Warn("enrollment refused: not an enrollment token", "token", tokens.Redact(req.GetEnrollmentToken()))
		return nil, status.Error(codes.Unauthenticated, "not a valid enrollment token")
	}
	now := h.now()
	t, err := h.store.GetToken(ctx, id)
	if err == nil {
		err = tokens.Verify(t, secret, now)
	}
	if err != nil {
		log.Warn("enrollment refused", "token", tokens.Redact(req.GetEnrollmentToken()), "err", err)
		return nil, status.Error(codes.Unauthenticated, "enrollment token refused")
	}
	// A new machine must not take over an existing worker's identity by
	// enrolling under its name.
	if w, err := h.store.GetWorker(ctx, req.GetName()); err == nil && w != nil {
		if toks, err := h.store.ListTokens(ctx, drover.TokenWorker); err == nil {
			for _, wt := range toks {
				if wt.Worker == req.GetName() && !wt.Revoked {
					log.Warn("enrollment refused: name taken")
					return nil, status.Errorf(codes.AlreadyExists, "a worker named %q is already enrolled; pick another name or revoke its token", req.GetName())
				}
			}
		}
	}
	full, wt, err := h.tokens.New(drover.TokenWorker, now)
	if err != nil {
		return nil, status.Error(codes.Internal, "internal error")
	}
	wt.Worker = req.GetName()
	wt.Comment = "enrolled from " + addr
	w := &drover.Worker{
		Name: req.GetName(), Version: req.GetProgramVersion(), OS: req.GetOs(), Arch: req.GetArch(),
		Availability: drover.Eager, FirstSeen: now, LastSeen: now, Address: addr,
		Approval: drover.ApprovalApproved,
	}
	if h.approval() {
		w.Approval = drover.ApprovalPending
	}
	if err := h.store.Enroll(ctx, id, now, &wt, w); err != nil {
		if drover.KindOf(err) == drover.Unauthorized {
			log.Warn("enrollment refused", "err", err)
			return nil, status.Error(codes.Unauthenticated, "enrollment token refused")
		}
		log.Error("enrollment failed", "err", err)
		return nil, status.Error(codes.Internal, "internal error")
	}
	if w.Approval == drover.ApprovalPending {
		log.Info("worker enrolled; it waits for an admin's approval (drover workers approve NAME)", "token", tokens.Redact(full))
	} else {
		log.Info("worker enrolled", "token", tokens.Redact(full))
	}
	resp := &pb.EnrollResponse{WorkerName: req.GetName(), Token: full}
	if h.probes != nil {
		resp.Probes = h.probes().GetProbes()
	}
	return resp, nil
}

// authenticate checks a hello's token against the worker it names.
func (h *Hub) authenticate(ctx context.Context, hello *pb.Hello) error {
	kind, id, secret, err := tokens.Parse(hello.GetToken())
	if err != nil {
		return err
	}
	if kind != drover.TokenWorker {
		return drover.Errorf(drover.Unauthorized, "a %s token cannot connect a worker (enroll first)", kind)
	}
	t, err := h.store.GetToken(ctx, id)
	if err != nil {
		if drover.KindOf(err) == drover.NotFound {
			return drover.Errorf(drover.Unauthorized, "unknown token")
		}
		return err
	}
	now := h.now()
	if c, ok := h.verified.Get(hello.GetToken(), now); ok && c.ID == t.ID && c.Hash == t.Hash {
		if err := tokens.Usable(t, now); err != nil {
			return err
		}
	} else {
		if err := tokens.Verify(t, secret, now); err != nil {
			return err
		}
		h.verified.Put(hello.GetToken(), *t, now)
	}
	if t.Worker != hello.GetName() {
		return drover.Errorf(drover.Unauthorized, "token belongs to worker %q, not %q", t.Worker, hello.GetName())
	}
	return nil
}

// checkApproval refuses a worker that an admin has not approved, as a
// gRPC status the worker acts on, logging the refusal once (for this
// connection attempt). A worker with no row yet was given its token by an
// admin, not enrolled, and needs no approval.
func (h *Hub) checkApproval(ctx context.Context, log *slog.Logger, name string) error {
	w, err := h.store.GetWorker(ctx, name)
	switch {
	case drover.KindOf(err) == drover.NotFound:
		return nil
	case err != nil:
		log.Error("worker refused: cannot read its approval", "err", err)
		return status.Error(codes.Unavailable, "master cannot check this worker's approval; try again")
	}
	switch w.Approval {
	case drover.ApprovalPending:
		log.Info("worker refused: awaiting approval by an admin")
		return status.Errorf(codes.FailedPrecondition, "worker %s is awaiting approval by an admin", name)
	case drover.ApprovalRejected:
		log.Warn("worker refused: rejected by an admin")
		return status.Errorf(codes.PermissionDenied, "worker %s was rejected", name)
	}
	return nil
}

// Disconnect ends worker name's live session, if any, with err as the
// reason the worker is given (a gRPC status, such as PermissionDenied for
// a rejected worker, passes through). It reports whether there was one.
func (h *Hub) Disconnect(name string, err error) bool {
	s, ok := h.Session(name)
	if ok {
		s.close(err)
	}
	return ok
}

// Connect serves one worker's stream.
func (h *Hub) Connect(stream pb.Worker_ConnectServer) error {
	ctx := stream.Context()
	addr := peerAddr(ctx)

	hello, err := h.recvHello(stream)
	if err != nil {
		h.logger.Warn("worker stream refused", "peer", addr, "err", err)
		return err
	}
	log := h.logger.With("worker", hello.GetName(), "peer", addr)
	if err := h.authenticate(ctx, hello); err != nil {
		log.Warn("worker refused", "token", tokens.Redact(hello.GetToken()), "err", err)
		if drover.KindOf(err) == drover.Unauthorized {
			return status.Error(codes.Unauthenticated, "worker token refused")
		}
		return status.Error(codes.Internal, "internal error")
	}
	if v := hello.GetProtocolVersion(); v < pb.MinProtocolVersion {
		log.Warn("worker refused: protocol too old", "protocol", v)
		return status.Errorf(codes.FailedPrecondition, "worker protocol %d is older than %d; upgrade the worker", v, pb.MinProtocolVersion)
	}
	if err := h.checkApproval(ctx, log, hello.GetName()); err != nil {
		return err
	}

	sctx, cancel := context.WithCancelCause(ctx)
	s := newSession(sctx, cancel, hello, addr, h.now())
	if old := h.swap(s); old != nil {
		// The same worker dialled again while we still held its previous
		// stream (a half-open TCP connection): the new one wins.
		log.Info("worker reconnected; closing its previous session")
		old.close(errors.New("replaced by a new connection"))
	}
	defer h.remove(s)

	hctx, hcancel := context.WithTimeout(sctx, handlerTimeout)
	err = h.handler.WorkerConnected(hctx, s, hello.GetRunning())
	hcancel()
	if err != nil {
		log.Info("worker sent elsewhere", "why", err)
		s.close(err)
		return refusal(err)
	}
	keep := h.attach(s.Name, hello.GetRunning())
	welcome := &pb.Welcome{ProtocolVersion: pb.ProtocolVersion, MasterVersion: h.version, WorkerName: s.Name, Keep: keep}
	if h.probes != nil {
		p := h.probes()
		welcome.Probes, welcome.ProbeIntervalMs = p.GetProbes(), p.GetProbeIntervalMs()
	}
	err = stream.Send(&pb.MasterMessage{Msg: &pb.MasterMessage_Welcome{Welcome: welcome}})
	if err != nil {
		s.close(err)
		h.disconnected(s, err)
		return err
	}
	log.Info("worker connected", "version", hello.GetProgramVersion(), "os", hello.GetOs(), "arch", hello.GetArch())

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.sendLoop(stream)
	}()
	// The receive loop runs on its own so that a session closed from our
	// side (replaced, send queue full, shutdown) ends at once, even while
	// Recv blocks; returning from Connect tears the stream down, which
	// unblocks Recv and ends that goroutine. Handler calls made after the
	// session closed are dropped by recvLoop.
	recvErr := make(chan error, 1)
	go func() { recvErr <- h.recvLoop(s, stream) }()
	select {
	case err = <-recvErr:
	case <-sctx.Done():
		err = context.Cause(sctx)
	}
	s.close(err)
	wg.Wait()
	if cause := context.Cause(sctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	h.disconnected(s, err)
	log.Info("worker disconnected", "err", err)
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return err
	}
	return nil
}

// disconnected tells the handler a session ended.
func (h *Hub) disconnected(s *Session, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), handlerTimeout)
	defer cancel()
	h.handler.WorkerDisconnected(ctx, s, err)
}

// refusal is what a worker the handler refused is told: a status by the
// error's kind, with the message only when the kind makes it one meant
// for the caller. What else the error says (a database's host name, say)
// stays in the master's log.
func refusal(err error) error {
	msg := drover.Message(err)
	switch drover.KindOf(err) {
	case drover.Conflict:
		return status.Error(codes.FailedPrecondition, msg)
	case drover.Unauthorized:
		return status.Error(codes.PermissionDenied, msg)
	case drover.Invalid:
		return status.Error(codes.InvalidArgument, msg)
	}
	return status.Error(codes.Unavailable, "the master cannot take this worker now; try again")
}

func (h *Hub) recvHello(stream pb.Worker_ConnectServer) (*pb.Hello, error) {
	type result struct {
		msg *pb.WorkerMessage
		err error
	}
	ch := make(chan result, 1)
	go func() { // owned: ends when Recv returns, which the timer below forces by returning (ending the stream)
		m, err := stream.Recv()
		ch <- result{m, err}
	}()
	timer := time.NewTimer(h.helloTO)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		hello := r.msg.GetHello()
		if hello == nil {
			return nil, status.Error(codes.InvalidArgument, "first message must be hello")
		}
		if !ValidName(hello.GetName()) {
			return nil, status.Errorf(codes.InvalidArgument, "bad worker name %q", hello.GetName())
		}
		return hello, nil
	case <-timer.C:
		return nil, status.Error(codes.DeadlineExceeded, "no hello in time")
	}
}

func (h *Hub) recvLoop(s *Session, stream pb.Worker_ConnectServer) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		if s.ctx.Err() != nil {
			return context.Cause(s.ctx)
		}
		s.touch(h.now())
		if err := h.handle(s, m); err != nil {
			return err
		}
	}
}

// handle checks one message of an established session and passes it on.
// Its error ends the session: a worker that breaks the protocol gets a
// clean restart, not a master that guesses.
func (h *Hub) handle(s *Session, m *pb.WorkerMessage) error {
	switch msg := m.GetMsg().(type) {
	case *pb.WorkerMessage_Output:
		o := msg.Output
		if o.GetCommandId() == "" || o.GetSeq() == 0 {
			return status.Error(codes.InvalidArgument, "output without command id or sequence number")
		}
		if err := h.output(s, o); err != nil {
			return status.Errorf(codes.InvalidArgument, "output of %s: %v", o.GetCommandId(), err)
		}
	case *pb.WorkerMessage_Finished:
		if msg.Finished.GetCommandId() == "" {
			return status.Error(codes.InvalidArgument, "finished without command id")
		}
		if err := h.finished(s, msg.Finished); err != nil {
			return status.Errorf(codes.InvalidArgument, "finished %s: %v", msg.Finished.GetCommandId(), err)
		}
	case *pb.WorkerMessage_StepUpdate:
		if msg.StepUpdate.GetCommandId() == "" {
			return status.Error(codes.InvalidArgument, "step update without command id")
		}
		if err := h.stepUpdate(s.ctx, s, msg.StepUpdate); err != nil {
			return status.Errorf(codes.InvalidArgument, "step update of %s: %v", msg.StepUpdate.GetCommandId(), err)
		}
	case *pb.WorkerMessage_Facts:
		s.updateFacts(msg.Facts)
		ctx, cancel := context.WithTimeout(s.ctx, handlerTimeout)
		h.handler.FactsChanged(ctx, s)
		cancel()
	case *pb.WorkerMessage_Hello:
		return status.Error(codes.InvalidArgument, "hello sent twice")
	default:
		return status.Error(codes.InvalidArgument, "empty or unknown message")
	}
	return nil
}

func (h *Hub) swap(s *Session) *Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.sessions[s.Name]
	h.sessions[s.Name] = s
	return old
}

func (h *Hub) remove(s *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sessions[s.Name] == s {
		delete(h.sessions, s.Name)
	}
}

// CloseAll ends every session, for shutdown.
func (h *Hub) CloseAll(reason error) {
	for _, s := range h.Sessions() {
		s.close(reason)
	}
}

// errSendQueueFull is why a session whose worker stopped reading is closed.
var errSendQueueFull = fmt.Errorf("send queue full: worker not reading")

// Server timings and limits of the worker protocol's gRPC server.
const (
	// keepaliveMinTime is the shortest interval between a worker's pings
	// the server tolerates; the agent pings every 30 s.
	keepaliveMinTime = 10 * time.Second
	// keepaliveTime and keepaliveTimeout make the server ping a quiet
	// connection and drop one that does not answer: a worker cut off
	// silently (a NAT timing out, a cable pulled) is seen gone within
	// about 40 s, and its builds' grace begins.
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
	// maxRecvMsgSize bounds a worker's message: output comes in chunks
	// far smaller; anything bigger is a broken or hostile peer.
	maxRecvMsgSize = 4 << 20
)

// NewServer makes the gRPC server that serves h to workers, over TLS
// when tlsCfg is set (plaintext otherwise, which the caller allows only
// where it is safe).
func NewServer(h *Hub, tlsCfg *tls.Config) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	gs := grpc.NewServer(opts...)
	pb.RegisterWorkerServer(gs, h)
	return gs
}
