package workerhub

import (
	"context"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// sendQueue bounds messages waiting for one worker. Commands and acks are
// small and few (an ack per running command per flush); a worker that lets
// this many pile up is not reading, and its session is closed so it
// reconnects cleanly. The channel is allocated whole per session, so it is
// kept small: at 10,000 idle workers every slot costs 80 KB.
const sendQueue = 256

// Session is one connected worker. Its fields from the hello are fixed for
// the session's life; facts and availability may change.
type Session struct {
	Name    string
	Version string // the worker's program version
	// Protocol is the protocol version the worker speaks: the master
	// sends it only what that version has (see workerproto's history).
	Protocol  uint32
	OS        string
	Arch      string
	Labels    map[string]string
	MaxBuilds int
	Addr      string
	Since     time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc
	out    chan *pb.MasterMessage

	mu           sync.Mutex
	facts        drover.Facts
	availability drover.Availability
	availReason  string
	lastSeen     time.Time
}

func newSession(ctx context.Context, cancel context.CancelCauseFunc, hello *pb.Hello, addr string, now time.Time) *Session {
	s := &Session{
		Name: hello.GetName(), Version: hello.GetProgramVersion(), Protocol: hello.GetProtocolVersion(), OS: hello.GetOs(), Arch: hello.GetArch(),
		Labels: hello.GetLabels(), MaxBuilds: int(hello.GetMaxBuilds()), Addr: addr, Since: now,
		ctx: ctx, cancel: cancel, out: make(chan *pb.MasterMessage, sendQueue),
		lastSeen: now,
	}
	if s.MaxBuilds < 1 {
		s.MaxBuilds = 1
	}
	s.facts = factsFromProto(hello.GetFacts())
	s.availability = parseAvailability(hello.GetAvailability())
	s.availReason = hello.GetAvailabilityReason()
	return s
}

func factsFromProto(m map[string]*pb.FactValues) drover.Facts {
	f := make(drover.Facts, len(m))
	for k, v := range m {
		f[k] = append([]string(nil), v.GetValues()...)
	}
	return f
}

// parseAvailability reads a worker's availability; an empty or unknown
// one (a newer worker's?) is eager, as a worker that says nothing is.
func parseAvailability(s string) drover.Availability {
	if a, err := drover.ParseAvailability(s); err == nil {
		return a
	}
	return drover.Eager
}

// Facts returns the worker's facts as it reports them, with its labels
// folded in (a label is a one-valued fact the owner sets).
func (s *Session) Facts() drover.Facts {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := make(drover.Facts, len(s.facts)+len(s.Labels))
	for k, v := range s.facts {
		f[k] = v
	}
	for k, v := range s.Labels {
		f[k] = []string{v}
	}
	return f
}

// Availability returns what the worker last said of its availability, and
// why.
func (s *Session) Availability() (drover.Availability, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.availability, s.availReason
}

// LastSeen is when the worker last sent anything.
func (s *Session) LastSeen() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeen
}

func (s *Session) touch(t time.Time) {
	s.mu.Lock()
	s.lastSeen = t
	s.mu.Unlock()
}

func (s *Session) updateFacts(u *pb.FactsUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(u.GetFacts()) > 0 {
		s.facts = factsFromProto(u.GetFacts())
	}
	if u.GetAvailability() != "" {
		s.availability = parseAvailability(u.GetAvailability())
		s.availReason = u.GetAvailabilityReason()
	}
}

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Err says why the session ended, or nil while it lives.
func (s *Session) Err() error { return context.Cause(s.ctx) }

// Send queues m for the worker. It fails with Unavailable when the session
// has ended, and ends a session whose queue is full.
func (s *Session) Send(m *pb.MasterMessage) error {
	if s.ctx.Err() != nil {
		return drover.Errorf(drover.Unavailable, "worker %s disconnected", s.Name)
	}
	select {
	case s.out <- m:
		return nil
	default:
		s.close(errSendQueueFull)
		return drover.Errorf(drover.Unavailable, "worker %s: %v", s.Name, errSendQueueFull)
	}
}

// Run asks the worker to start a command.
func (s *Session) Run(cmd *pb.RunCommand) error {
	return s.Send(&pb.MasterMessage{Msg: &pb.MasterMessage_Run{Run: cmd}})
}

// SetProbes sends the worker new probes.
func (s *Session) SetProbes(p *pb.SetProbes) error {
	return s.Send(&pb.MasterMessage{Msg: &pb.MasterMessage_SetProbes{SetProbes: p}})
}

// Cancel asks the worker to kill a command.
func (s *Session) Cancel(commandID, reason string) error {
	return s.Send(&pb.MasterMessage{Msg: &pb.MasterMessage_Cancel{Cancel: &pb.Cancel{CommandId: commandID, Reason: reason}}})
}

// Ack tells the worker its output up to seq is stored.
func (s *Session) Ack(commandID string, seq uint64) error {
	return s.Send(&pb.MasterMessage{Msg: &pb.MasterMessage_Ack{Ack: &pb.Ack{CommandId: commandID, Seq: seq}}})
}

// AckFinished tells the worker the command's output, up to lastSeq, and its
// Finished are stored: it may forget the command.
func (s *Session) AckFinished(commandID string, lastSeq uint64) error {
	return s.Send(&pb.MasterMessage{Msg: &pb.MasterMessage_Ack{Ack: &pb.Ack{CommandId: commandID, Seq: lastSeq, Finished: true}}})
}

func (s *Session) close(err error) { s.cancel(err) }

// sendLoop is the only writer of the stream; it ends with the session.
func (s *Session) sendLoop(stream pb.Worker_ConnectServer) {
	for {
		select {
		case <-s.ctx.Done():
			return
		case m := <-s.out:
			if err := stream.Send(m); err != nil {
				s.close(err)
				return
			}
		}
	}
}
