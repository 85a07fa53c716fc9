package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/drover-ci/drover/internal/workerproto"
)

const (
	testEnrollToken = "drover_enroll_0123456789abcdef"
	testWorkerToken = "drover_worker_fedcba9876543210secret"
)

// fakeMaster is an in-test master that speaks the real protocol over real
// gRPC on 127.0.0.1. Each accepted Connect stream becomes a fakeSession
// the test drives.
type fakeMaster struct {
	workerproto.UnimplementedWorkerServer
	t    *testing.T
	addr string
	ca   *x509.Certificate // nil when plaintext
	cert *tls.Certificate  // the server's; nil when plaintext

	stop func() // stops the server, closing every connection, as a master that dies does

	autoAck atomic.Bool
	// keep, if set, chooses Welcome.keep; by default every held command is kept.
	keep     atomic.Pointer[func(*workerproto.Hello) []string]
	sessions chan *fakeSession

	// stallWelcome and stallEnroll make the master stuck: it takes the
	// hello (or the EnrollRequest), tells stalled, and never answers,
	// until the worker gives up on the call.
	stallWelcome, stallEnroll atomic.Bool
	stalled                   chan string // "hello" or "enroll", as a stuck master takes one; nil: not told

	mu      sync.Mutex
	enrolls []*workerproto.EnrollRequest
}

// stall tells m.stalled that a call of what arrived, and waits until the
// worker gives up on it.
func (m *fakeMaster) stall(ctx context.Context, what string) error {
	select {
	case m.stalled <- what:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// Stalled waits until the stuck master took a call of what.
func (m *fakeMaster) Stalled(t *testing.T, what string) {
	t.Helper()
	select {
	case got := <-m.stalled:
		if got != what {
			t.Fatalf("the stuck master took a %s, want a %s", got, what)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the worker sent no %s to the stuck master", what)
	}
}

type fakeSession struct {
	hello *workerproto.Hello
	in    chan *workerproto.WorkerMessage // from the worker
	out   chan *workerproto.MasterMessage // to the worker
	drop  chan struct{}
	once  sync.Once
}

// Drop ends the stream from the master's side, as a master restart would.
func (s *fakeSession) Drop() { s.once.Do(func() { close(s.drop) }) }

func (s *fakeSession) Send(m *workerproto.MasterMessage) { s.out <- m }

func (s *fakeSession) Run(req *workerproto.RunCommand) {
	s.Send(&workerproto.MasterMessage{Msg: &workerproto.MasterMessage_Run{Run: req}})
}

func (s *fakeSession) Ack(id string, seq uint64) {
	s.Send(&workerproto.MasterMessage{Msg: &workerproto.MasterMessage_Ack{Ack: &workerproto.Ack{CommandId: id, Seq: seq}}})
}

// Next returns the next message from the worker.
func (s *fakeSession) Next(t *testing.T, timeout time.Duration) *workerproto.WorkerMessage {
	t.Helper()
	select {
	case m := <-s.in:
		return m
	case <-time.After(timeout):
		t.Fatalf("no message from the worker within %s", timeout)
		return nil
	}
}

// Collect reads messages until the Finished of command id, and returns the
// command's output chunks in arrival order.
func (s *fakeSession) Collect(t *testing.T, id string, timeout time.Duration) ([]*workerproto.Output, *workerproto.Finished) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var out []*workerproto.Output
	for {
		m := s.Next(t, time.Until(deadline))
		if o := m.GetOutput(); o != nil && o.GetCommandId() == id {
			out = append(out, o)
		}
		if f := m.GetFinished(); f != nil && f.GetCommandId() == id {
			return out, f
		}
	}
}

func startFakeMaster(t *testing.T, useTLS bool) *fakeMaster {
	t.Helper()
	if !useTLS {
		return startFakeMasterWith(t, nil, nil)
	}
	ca, cert := testCertificates(t)
	return startFakeMasterWith(t, ca, &cert)
}

// startFakeSite starts n masters of one site: their server certificates
// are signed by one CA, as `drover master init --ca-from` makes them.
func startFakeSite(t *testing.T, n int) []*fakeMaster {
	t.Helper()
	ca, caKey := testCA(t)
	var ms []*fakeMaster
	for range n {
		cert := testServerCert(t, ca, caKey)
		ms = append(ms, startFakeMasterWith(t, ca, &cert))
	}
	return ms
}

// startFakeMasterWith starts a fake master on 127.0.0.1: plaintext when
// cert is nil, else presenting cert (signed by ca).
func startFakeMasterWith(t *testing.T, ca *x509.Certificate, cert *tls.Certificate) *fakeMaster {
	t.Helper()
	return startFakeMasterAt(t, "127.0.0.1:0", ca, cert)
}

// restartFakeMaster starts a new master where old was, with its
// certificate, as a master restarted after it died.
func restartFakeMaster(t *testing.T, old *fakeMaster) *fakeMaster {
	t.Helper()
	old.stop()
	return startFakeMasterAt(t, old.addr, old.ca, old.cert)
}

func startFakeMasterAt(t *testing.T, addr string, ca *x509.Certificate, cert *tls.Certificate) *fakeMaster {
	t.Helper()
	m := &fakeMaster{t: t, sessions: make(chan *fakeSession, 16), stalled: make(chan string, 16), ca: ca, cert: cert}
	m.autoAck.Store(true)
	var opts []grpc.ServerOption
	if cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}})))
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m.addr = lis.Addr().String()
	srv := grpc.NewServer(opts...)
	workerproto.RegisterWorkerServer(srv, m)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	var once sync.Once
	m.stop = func() { once.Do(func() { srv.Stop(); <-done }) }
	t.Cleanup(m.stop)
	return m
}

func (m *fakeMaster) fingerprint() string { return fingerprint(m.ca.Raw) }

func (m *fakeMaster) Enroll(ctx context.Context, req *workerproto.EnrollRequest) (*workerproto.EnrollResponse, error) {
	if m.stallEnroll.Load() {
		return nil, m.stall(ctx, "enroll")
	}
	m.mu.Lock()
	m.enrolls = append(m.enrolls, req)
	m.mu.Unlock()
	if req.GetEnrollmentToken() != testEnrollToken {
		return nil, status.Error(codes.Unauthenticated, "unknown enrollment token")
	}
	return &workerproto.EnrollResponse{WorkerName: req.GetName(), Token: testWorkerToken}, nil
}

func (m *fakeMaster) Connect(stream workerproto.Worker_ConnectServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHello()
	if h == nil {
		return status.Error(codes.InvalidArgument, "first message must be a hello")
	}
	if h.GetToken() != testWorkerToken {
		return status.Error(codes.Unauthenticated, "unknown worker token")
	}
	if m.stallWelcome.Load() {
		return m.stall(ctx, "hello")
	}
	var keep []string
	if f := m.keep.Load(); f != nil {
		keep = (*f)(h)
	} else {
		for _, r := range h.GetRunning() {
			keep = append(keep, r.GetCommandId())
		}
	}
	err = stream.Send(&workerproto.MasterMessage{Msg: &workerproto.MasterMessage_Welcome{Welcome: &workerproto.Welcome{
		ProtocolVersion: workerproto.ProtocolVersion, MasterVersion: "test", WorkerName: h.GetName(), Keep: keep,
	}}})
	if err != nil {
		return err
	}
	s := &fakeSession{
		hello: h,
		in:    make(chan *workerproto.WorkerMessage, 10000),
		out:   make(chan *workerproto.MasterMessage, 10000),
		drop:  make(chan struct{}),
	}
	m.sessions <- s
	readErr := make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				readErr <- err
				return
			}
			select {
			case s.in <- msg:
			case <-ctx.Done():
				return
			}
			if !m.autoAck.Load() {
				continue
			}
			var ack *workerproto.Ack
			if o := msg.GetOutput(); o != nil {
				ack = &workerproto.Ack{CommandId: o.GetCommandId(), Seq: o.GetSeq()}
			} else if f := msg.GetFinished(); f != nil {
				ack = &workerproto.Ack{CommandId: f.GetCommandId(), Seq: f.GetLastSeq()}
			}
			if ack != nil {
				select {
				case s.out <- &workerproto.MasterMessage{Msg: &workerproto.MasterMessage_Ack{Ack: ack}}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	for {
		select {
		case msg := <-s.out:
			if err := stream.Send(msg); err != nil {
				return err
			}
		case <-s.drop:
			return status.Error(codes.Unavailable, "master dropped the stream")
		case err := <-readErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Session waits for the worker's next connection.
func (m *fakeMaster) Session(t *testing.T) *fakeSession {
	t.Helper()
	select {
	case s := <-m.sessions:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not connect")
		return nil
	}
}

// testCertificates makes a CA and a server certificate it signs, valid for
// localhost and 127.0.0.1; the server presents leaf and CA, as the master
// does.
func testCertificates(t *testing.T) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	ca, caKey := testCA(t)
	return ca, testServerCert(t, ca, caKey)
}

// testCA makes a CA certificate and its key.
func testCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "drover test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	return ca, caKey
}

// testServerCert makes a server certificate signed by ca for localhost and
// 127.0.0.1, with the CA in its chain.
func testServerCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	now := time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "drover test master"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leafDER, ca.Raw}, PrivateKey: key}
}

// testLogger logs to the test's output, shown on failure or with -v.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestAgent makes an agent for m: plaintext unless m uses TLS, with
// short backoffs so reconnects are quick.
func newTestAgent(t *testing.T, m *fakeMaster, dir string, mod func(*Config)) *Agent {
	t.Helper()
	cfg := Config{
		Masters: []string{m.addr},
		Name:    "w1",
		Token:   testWorkerToken,
		Dir:     dir,
		Version: "1.2.3-test",
		Logger:  testLogger(t),
		Labels:  map[string]string{"gpu": "no"},
	}
	if m.ca == nil {
		cfg.Plaintext = true
	} else {
		cfg.CAFingerprint = m.fingerprint()
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.backoffMin, a.backoffMax = 20*time.Millisecond, 100*time.Millisecond
	return a
}

// runAgent runs a until the test ends; the returned channel yields Run's
// result. Cancel ends it early.
func runAgent(t *testing.T, a *Agent) (cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	finished := make(chan struct{})
	go func() { defer close(finished); ch <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return cancel, ch
}
