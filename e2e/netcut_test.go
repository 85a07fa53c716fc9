package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// blackholeProxy forwards TCP connections to a target until Cut, after
// which the connections it holds stop carrying bytes in either direction
// (as when a NAT forgets them or a cable is pulled) without being closed;
// connections made after Cut are forwarded normally.
type blackholeProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []*proxied
	wg    sync.WaitGroup
}

type proxied struct {
	client, server net.Conn
	mu             sync.Mutex
	dead           bool
}

func newBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.client.Close()
			c.server.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *blackholeProxy) Addr() string { return p.ln.Addr().String() }

func (p *blackholeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxied{client: c, server: s}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(pc, c, s)
		go p.pump(pc, s, c)
	}
}

// pump copies until the connection is cut; then it swallows what arrives
// and forwards nothing, holding the connection open.
func (p *blackholeProxy) pump(pc *proxied, from, to net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			pc.mu.Lock()
			dead := pc.dead
			pc.mu.Unlock()
			if !dead {
				if _, err := to.Write(buf[:n]); err != nil {
					return
				}
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

// Cut blackholes every connection made so far.
func (p *blackholeProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.mu.Lock()
		c.dead = true
		c.mu.Unlock()
	}
}

// A network cut between worker and master (a silent one: no reset, no
// FIN) is detected by keepalives; the worker reconnects, the master
// re-attaches the running command to the new connection, and the build
// goes on with every line of its output stored exactly once.
func TestNetworkCutIsSurvived(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `
drover.builder(name = "chatty", steps = [
    drover.shell("for i in $(seq 1 250); do echo line-$i; sleep 0.1; done", name = "count"),
])
`)
	proxy := newBlackholeProxy(t, m.Workers)
	w := testenv.Start(t, "worker via proxy", "worker", "run", "--master", proxy.Addr(), "--token", m.EnrollToken,
		"--name", "far", "--dir", t.TempDir(), "--ca-sha256", m.Fingerprint, "--log-level", "debug")
	ctx := context.Background()
	m.WaitFor(t, time.Minute, "the worker to connect through the proxy", func() bool {
		ws, err := m.Client.Workers(ctx)
		return err == nil && len(ws) == 1 && ws[0].Connected
	})
	r := m.Force(t, "chatty", api.ForceRequest{})
	m.WaitFor(t, time.Minute, "output to flow", func() bool {
		rd, err := m.Client.Request(ctx, r.ID)
		if err != nil || len(rd.Builds) == 0 {
			return false
		}
		d, err := m.Client.Build(ctx, rd.Builds[0].ID)
		return err == nil && strings.Contains(m.StepLog(t, d, 0), "line-20")
	})
	proxy.Cut()
	cutAt := time.Now()

	d := m.WaitBuild(t, r.ID, 3*time.Minute)
	if d.Build.Result != drover.Success {
		t.Fatalf("build after the cut: %s (%s)", d.Build.Result, d.Build.Summary)
	}
	// Keepalives (20 s + 10 s on the worker) noticed the dead connection,
	// and the worker came back through a fresh one.
	if strings.Count(w.Output(), "connected to master") < 2 || !strings.Contains(w.Output(), "broke") {
		t.Errorf("the worker never noticed the cut and reconnected:\n%s", w.Output())
	}
	t.Logf("build finished %s after the cut", time.Since(cutAt).Round(time.Second))
	var lines []string
	for _, l := range strings.Split(m.StepLog(t, d, 0), "\n") {
		if strings.HasPrefix(l, "line-") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 250 {
		t.Fatalf("log holds %d lines, want 250", len(lines))
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line-%d", i+1) {
			t.Fatalf("line %d is %q", i+1, l)
		}
	}
}
