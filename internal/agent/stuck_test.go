package agent

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

// stuckTimeout is the shortened timeout of the stuck-master tests: long
// enough that a healthy loopback exchange never reaches it under -race on
// a busy machine (it applies to the healthy masters too), far shorter
// than the defaults, which the tests' waits (10 s) stay under.
const stuckTimeout = time.Second

// stuckListener is a master that is up but stuck: it accepts TCP
// connections on 127.0.0.1 and never says a word on them. Each accepted
// connection is announced on accepted.
type stuckListener struct {
	addr     string
	accepted chan struct{}
}

func startStuckListener(t *testing.T) *stuckListener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &stuckListener{addr: lis.Addr().String(), accepted: make(chan struct{}, 16)}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case l.accepted <- struct{}{}:
			default:
			}
		}
	})
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l
}

// Accepted waits until the worker connected to the stuck listener.
func (l *stuckListener) Accepted(t *testing.T) {
	t.Helper()
	select {
	case <-l.accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not dial the stuck master")
	}
}

// logLines keeps what a logger writes, shown in the test's output too, so
// that a test can wait for a line.
type logLines struct {
	mu    sync.Mutex
	text  strings.Builder
	wrote chan struct{} // signalled after each write
}

// newLogLines returns a logger for the agent and what it wrote.
func newLogLines(t *testing.T) (*slog.Logger, *logLines) {
	l := &logLines{wrote: make(chan struct{}, 1)}
	h := slog.NewTextHandler(io.MultiWriter(t.Output(), l), &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), l
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.text.Write(p)
	l.mu.Unlock()
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

// WaitFor waits until a logged line contains want, and returns it.
func (l *logLines) WaitFor(t *testing.T, want string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		text := l.text.String()
		l.mu.Unlock()
		for line := range strings.Lines(text) {
			if strings.Contains(line, want) {
				return line
			}
		}
		select {
		case <-l.wrote:
		case <-deadline:
			t.Fatalf("no log line contains %q; the log:\n%s", want, text)
			return ""
		}
	}
}

// A master that is up but stuck, at any point before the welcome, is a
// failed attempt: the worker gives up on it within the timeout of that
// point, says so, and connects to the next master of its site at once
// (the backoff, 30 s here, is for rounds in which every master failed).
func TestStuckMasterIsFailedOver(t *testing.T) {
	tests := []struct {
		name string
		// stuck starts the stuck master, of the site of healthy, and
		// returns its address and a wait until the worker reached the
		// point where it is stuck.
		stuck    func(t *testing.T, site []*fakeMaster) (addr string, reached func(*testing.T))
		timeouts Timeouts
		enroll   bool
		what     string // what the log says the master did not answer
	}{
		{
			name: "accepts the connection and says nothing",
			stuck: func(t *testing.T, _ []*fakeMaster) (string, func(*testing.T)) {
				l := startStuckListener(t)
				return l.addr, l.Accepted
			},
			timeouts: Timeouts{Dial: stuckTimeout},
			what:     "the connection handshake",
		},
		{
			name: "takes the hello and sends no welcome",
			stuck: func(t *testing.T, site []*fakeMaster) (string, func(*testing.T)) {
				site[0].stallWelcome.Store(true)
				return site[0].addr, func(t *testing.T) { site[0].Stalled(t, "hello") }
			},
			timeouts: Timeouts{Welcome: stuckTimeout},
			what:     "the hello",
		},
		{
			name: "takes the enrollment and never answers",
			stuck: func(t *testing.T, site []*fakeMaster) (string, func(*testing.T)) {
				site[0].stallEnroll.Store(true)
				return site[0].addr, func(t *testing.T) { site[0].Stalled(t, "enroll") }
			},
			timeouts: Timeouts{Enroll: stuckTimeout},
			enroll:   true,
			what:     "the enrollment",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			site := startFakeSite(t, 2)
			stuck, reached := tt.stuck(t, site)
			healthy := site[1]
			logger, lines := newLogLines(t)
			a := newTestAgent(t, healthy, t.TempDir(), func(c *Config) {
				c.Masters = []string{stuck, healthy.addr}
				c.Timeouts = tt.timeouts
				c.Logger = logger
				if tt.enroll {
					c.Token = testEnrollToken
				}
			})
			slowBackoff(a)
			start := time.Now()
			_, done := runAgent(t, a)
			reached(t)

			s := healthy.Session(t)
			if took := time.Since(start); took < stuckTimeout {
				t.Errorf("connected to the healthy master after %s, before the stuck one's %s were up", took, stuckTimeout)
			}
			if got := s.hello.GetToken(); got != testWorkerToken {
				t.Errorf("hello token = %q, want the worker's own", got)
			}
			want := "master " + stuck + " did not answer " + tt.what + " within " + stuckTimeout.String() + "; trying " + healthy.addr
			lines.WaitFor(t, want)
			select {
			case err := <-done:
				t.Fatalf("Run returned %v", err)
			default:
			}
			if tt.enroll {
				healthy.mu.Lock()
				n := len(healthy.enrolls)
				healthy.mu.Unlock()
				if n != 1 {
					t.Errorf("the healthy master took %d enrollments, want 1", n)
				}
			}
		})
	}
}

// The welcome timeout bounds the wait for the welcome, not the stream:
// a stream that outlives it many times over still carries messages both
// ways, and the worker does not reconnect.
func TestWelcomeTimeoutBoundsOnlyTheHandshake(t *testing.T) {
	m := startFakeMaster(t, false)
	a := newTestAgent(t, m, t.TempDir(), func(c *Config) { c.Timeouts = Timeouts{Welcome: stuckTimeout, Dial: stuckTimeout} })
	runAgent(t, a)
	s := m.Session(t)
	// Outlast the timeout: had it bounded the stream, the stream would
	// be cancelled by now.
	<-time.After(3 * stuckTimeout)
	if _, err := a.setManual(&ManualSetting{Availability: drover.Draining, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := s.Next(t, time.Until(deadline))
		if f := msg.GetFacts(); f != nil && f.GetAvailability() == string(drover.Draining) {
			break
		}
	}
	select {
	case <-m.sessions:
		t.Fatal("the worker reconnected: the welcome timeout cut its stream")
	default:
	}
}

// Enroll (what `drover worker join` runs) gives up on a stuck master with
// an error that says so, within the timeout, and when the join lists
// several masters it enrolls with the next.
func TestEnrollGivesUpOnAStuckMaster(t *testing.T) {
	enroll := func(t *testing.T, masters []string, pin string, tm Timeouts) (Enrollment, *logLines, error) {
		t.Helper()
		logger, lines := newLogLines(t)
		type result struct {
			e   Enrollment
			err error
		}
		ch := make(chan result, 1)
		go func() {
			e, err := Enroll(t.Context(), Config{Masters: masters, Name: "w1", Token: testEnrollToken,
				CAFingerprint: pin, Dir: t.TempDir(), Logger: logger, Timeouts: tm})
			ch <- result{e, err}
		}()
		select {
		case r := <-ch:
			return r.e, lines, r.err
		case <-time.After(10 * time.Second):
			t.Fatal("Enroll still waits on the stuck master after 10 s")
			return Enrollment{}, nil, nil
		}
	}
	wantNoAnswer := func(t *testing.T, err error, want string) {
		t.Helper()
		if err == nil || !errors.Is(err, errNoAnswer) || drover.KindOf(err) != drover.Unavailable || err.Error() != want {
			t.Fatalf("Enroll = %v (kind %v); want the Unavailable error %q", err, drover.KindOf(err), want)
		}
	}

	t.Run("accepts the connection and says nothing", func(t *testing.T) {
		site := startFakeSite(t, 1)
		l := startStuckListener(t)
		start := time.Now()
		_, _, err := enroll(t, []string{l.addr}, site[0].fingerprint(), Timeouts{Dial: stuckTimeout})
		wantNoAnswer(t, err, "master "+l.addr+" did not answer the connection handshake within "+stuckTimeout.String())
		if took := time.Since(start); took < stuckTimeout {
			t.Errorf("gave up after %s, before the timeout", took)
		}
	})
	t.Run("never answers the enrollment", func(t *testing.T) {
		site := startFakeSite(t, 1)
		site[0].stallEnroll.Store(true)
		_, _, err := enroll(t, []string{site[0].addr}, site[0].fingerprint(), Timeouts{Enroll: stuckTimeout})
		wantNoAnswer(t, err, "master "+site[0].addr+" did not answer the enrollment within "+stuckTimeout.String())
		site[0].Stalled(t, "enroll")
	})
	t.Run("the next master enrolls", func(t *testing.T) {
		site := startFakeSite(t, 2)
		site[0].stallEnroll.Store(true)
		l := startStuckListener(t)
		masters := []string{l.addr, site[0].addr, site[1].addr}
		e, lines, err := enroll(t, masters, site[0].fingerprint(), Timeouts{Dial: stuckTimeout, Enroll: stuckTimeout})
		if err != nil {
			t.Fatalf("Enroll: %v", err)
		}
		if e.Name != "w1" || e.Already || len(e.Masters) != 3 {
			t.Errorf("enrollment = %+v", e)
		}
		lines.WaitFor(t, "did not answer the connection handshake")
		lines.WaitFor(t, "did not answer the enrollment")
		site[1].mu.Lock()
		defer site[1].mu.Unlock()
		if len(site[1].enrolls) != 1 {
			t.Errorf("the healthy master took %d enrollments, want 1", len(site[1].enrolls))
		}
	})
}

// A transfer whose master stops answering gives up on that call within
// the transfer timeouts and tries again, as after a broken connection:
// an UploadStatus left unanswered, a Download stream that brings nothing.
func TestStuckTransferIsRetried(t *testing.T) {
	t.Run("upload", func(t *testing.T) {
		m := startUploadMaster(t, 1<<30)
		m.stallStatus = map[int]bool{1: true}
		dir := t.TempDir()
		data := testData(2*transferChunk+5, 1)
		if err := os.MkdirAll(filepath.Join(dir, "b", "build", "out"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "b", "build", "out", "data.bin"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		a := newTestAgent(t, m.fakeMaster, dir, func(c *Config) { c.Timeouts = Timeouts{TransferCall: stuckTimeout} })
		runAgent(t, a)
		s := m.Session(t)
		s.Run(&workerproto.RunCommand{CommandId: "up1", Builder: "b", BuildId: 1, Step: 1,
			Transfer: &workerproto.Transfer{Kind: workerproto.TransferKind_TRANSFER_KIND_UPLOAD, WorkerPath: "build/out", MasterPath: "results", MaxBytes: 1 << 30}})
		_, f := s.Collect(t, "up1", 30*time.Second)
		if f.GetExitCode() != 0 {
			t.Fatalf("upload finished %v: %s", f.GetExitCode(), f.GetError())
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.statusCalls != 2 || !bytes.Equal(m.files["data.bin"], data) {
			t.Fatalf("UploadStatus called %d times, the master holds %d bytes of %d; want 2 calls and the file", m.statusCalls, len(m.files["data.bin"]), len(data))
		}
	})
	t.Run("download", func(t *testing.T) {
		data := testData(3*transferChunk+7, 2)
		m := startDownloadMaster(t, 1<<40, memFile{"", data})
		m.stall = map[int]bool{1: true}
		dir := t.TempDir()
		a := newTestAgent(t, m.fakeMaster, dir, func(c *Config) { c.Timeouts = Timeouts{TransferIdle: stuckTimeout} })
		runAgent(t, a)
		s := m.Session(t)
		s.Run(&workerproto.RunCommand{CommandId: "dl1", Builder: "b", BuildId: 1, Step: 2,
			Transfer: &workerproto.Transfer{Kind: workerproto.TransferKind_TRANSFER_KIND_DOWNLOAD, WorkerPath: "in/data.bin", MasterPath: "artifact:x", MaxBytes: 1 << 30}})
		_, f := s.Collect(t, "dl1", 30*time.Second)
		if f.GetExitCode() != 0 {
			t.Fatalf("download finished %v: %s", f.GetExitCode(), f.GetError())
		}
		wantFile(t, filepath.Join(dir, "b", "in", "data.bin"), data)
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(m.requests) != 2 {
			t.Fatalf("%d Download calls, want the stalled one and a second", len(m.requests))
		}
	})
}
