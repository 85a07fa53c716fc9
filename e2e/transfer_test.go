package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// A build uploads a directory of its worker's files to the master as
// artifacts, downloads one back to a new place, and checks it; the API
// lists the artifacts with sizes and sha256 and serves them
// byte-identical, and the build page links them. An upload through a
// symlink leaving the build directory, and one over max_bytes, fail
// their step with a clear message.
func TestTransfer(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, `
drover.builder(name = "xfer", steps = [
    drover.shell("mkdir -p out/sub && echo 'report ok' > out/report.txt && head -c 3000000 /dev/urandom > out/sub/data.bin", name = "make"),
    drover.upload("out", "results"),
    drover.download("artifact:results/report.txt", "back/report.txt"),
    drover.shell("test \"$(cat back/report.txt)\" = 'report ok' && echo content-ok", name = "check"),
])
drover.builder(name = "escape", steps = [
    drover.shell("mkdir -p out && echo fine > out/fine.txt && ln -sf /etc/passwd out/passwd", name = "make"),
    drover.upload("out", "x"),
])
drover.builder(name = "toobig", steps = [
    drover.shell("head -c 2000 /dev/zero > big.bin", name = "make"),
    drover.upload("big.bin", max_bytes = 1000),
])
`)
	w := m.StartWorker(t, "w1")
	ctx := context.Background()

	r := m.Force(t, "xfer", api.ForceRequest{})
	d := m.WaitBuild(t, r.ID, 2*time.Minute)
	if d.Build.Result != drover.Success {
		for i := range d.Steps {
			t.Logf("step %d log:\n%s", i, m.StepLog(t, d, i))
		}
		t.Fatalf("build %s (%s)", d.Build.Result, d.Build.Summary)
	}
	if log := m.StepLog(t, d, 3); !strings.Contains(log, "content-ok") {
		t.Errorf("check step's log:\n%s", log)
	}

	as, err := m.Client.Artifacts(ctx, d.Build.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"results/report.txt":   filepath.Join(w.Dir, "xfer", "build", "out", "report.txt"),
		"results/sub/data.bin": filepath.Join(w.Dir, "xfer", "build", "out", "sub", "data.bin"),
	}
	if len(as) != len(want) {
		t.Fatalf("artifacts = %+v, want %d", as, len(want))
	}
	for _, a := range as {
		src, ok := want[a.Path]
		if !ok {
			t.Fatalf("unexpected artifact %q", a.Path)
		}
		orig, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(orig)
		if a.Size != int64(len(orig)) || a.SHA256 != hex.EncodeToString(sum[:]) || a.StepIndex != 1 {
			t.Errorf("artifact %s = size %d sha256 %s step %d, want %d %x 1", a.Path, a.Size, a.SHA256, a.StepIndex, len(orig), sum)
		}
		var buf bytes.Buffer
		if err := m.Client.DownloadArtifact(ctx, a.ID, &buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), orig) {
			t.Errorf("downloaded %s differs from the worker's file (%d bytes, want %d)", a.Path, buf.Len(), len(orig))
		}
		resp, err := http.Get(fmt.Sprintf("%s/api/v1/artifacts/%d", m.URL(), a.ID))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ContentLength != int64(len(orig)) || !strings.Contains(resp.Header.Get("Content-Disposition"), filepath.Base(a.Path)) {
			t.Errorf("GET artifact %d: Content-Length %d, Content-Disposition %q", a.ID, resp.ContentLength, resp.Header.Get("Content-Disposition"))
		}
	}
	got, err := os.ReadFile(filepath.Join(w.Dir, "xfer", "build", "back", "report.txt"))
	if err != nil || string(got) != "report ok\n" {
		t.Errorf("downloaded file = %q, %v", got, err)
	}

	// The build page lists the artifacts with download links.
	resp, err := http.Get(fmt.Sprintf("%s/builds/%d", m.URL(), d.Build.ID))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, a := range as {
		if link := fmt.Sprintf(`href="/api/v1/artifacts/%d"`, a.ID); !bytes.Contains(page, []byte(link)) || !bytes.Contains(page, []byte(a.Path)) {
			t.Errorf("build page lacks the link %s to %s", link, a.Path)
		}
	}

	for _, tc := range []struct{ builder, want string }{
		{"escape", "symlink passwd points to /etc/passwd, outside the build directory"},
		{"toobig", "over max_bytes"},
	} {
		r := m.Force(t, tc.builder, api.ForceRequest{})
		d := m.WaitBuild(t, r.ID, 2*time.Minute)
		if d.Build.Result != drover.Failure || d.Steps[1].Result != drover.Failure {
			t.Errorf("%s: build %s, upload step %s; want failure", tc.builder, d.Build.Result, d.Steps[1].Result)
		}
		if log := m.StepLog(t, d, 1); !strings.Contains(log, tc.want) {
			t.Errorf("%s: upload log lacks %q:\n%s", tc.builder, tc.want, log)
		}
		if as, err := m.Client.Artifacts(ctx, d.Build.ID); err != nil || len(as) != 0 {
			t.Errorf("%s: artifacts = %+v, %v; want none", tc.builder, as, err)
		}
	}
}

// cutProxy forwards TCP connections to a target and, once more than
// after bytes have gone from the target to the clients, closes every
// connection it holds, once; later connections are forwarded normally.
type cutProxy struct {
	ln     net.Listener
	target string
	after  int64

	mu    sync.Mutex
	conns []net.Conn
	down  int64 // bytes target → clients
	cut   bool
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string, after int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, after: after}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) Addr() string { return p.ln.Addr().String() }

func (p *cutProxy) Cut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

func (p *cutProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) accept() {
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
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(c, s, false)
		go p.pump(s, c, true)
	}
}

func (p *cutProxy) pump(from, to net.Conn, down bool) {
	defer p.wg.Done()
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if _, err := to.Write(buf[:n]); err != nil {
				return
			}
			if down {
				p.mu.Lock()
				p.down += int64(n)
				cut := !p.cut && p.down > p.after
				p.cut = p.cut || cut
				p.mu.Unlock()
				if cut {
					p.closeAll()
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// A download step whose connection is cut mid-file resumes from the
// bytes the worker holds, once the worker has reconnected, and ends with
// the file byte for byte.
func TestTransferDownloadResumesAfterACut(t *testing.T) {
	t.Parallel()
	const size = 16_000_000
	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.builder(name = "fetch", steps = [
    drover.shell("head -c %d /dev/urandom > data.bin", name = "make"),
    drover.upload("data.bin", "big/data.bin"),
    drover.download("artifact:big/data.bin", "back/data.bin"),
    drover.shell("cmp data.bin back/data.bin && echo same-bytes", name = "check"),
])
`, size))
	// Cut when about a third of the download has reached the worker; the
	// upload before it sends little towards the worker.
	proxy := newCutProxy(t, m.Workers, size/3)
	dir := t.TempDir()
	w := testenv.Start(t, "worker via proxy", "worker", "run", "--master", proxy.Addr(), "--token", m.EnrollToken,
		"--name", "far", "--dir", dir, "--ca-sha256", m.Fingerprint, "--log-level", "debug")
	ctx := context.Background()
	m.WaitFor(t, time.Minute, "the worker to connect through the proxy", func() bool {
		ws, err := m.Client.Workers(ctx)
		return err == nil && len(ws) == 1 && ws[0].Connected
	})
	r := m.Force(t, "fetch", api.ForceRequest{})
	d := m.WaitBuild(t, r.ID, 3*time.Minute)
	if d.Build.Result != drover.Success {
		for i := range d.Steps {
			t.Logf("step %d log:\n%s", i, m.StepLog(t, d, i))
		}
		t.Fatalf("build %s (%s)\n%s", d.Build.Result, d.Build.Summary, w.Output())
	}
	if !proxy.Cut() {
		t.Fatal("the proxy never cut the connection")
	}
	if log := m.StepLog(t, d, 2); !strings.Contains(log, "resuming at byte") {
		t.Errorf("the download did not resume:\n%s", log)
	}
	if log := m.StepLog(t, d, 3); !strings.Contains(log, "same-bytes") {
		t.Errorf("check step's log:\n%s", log)
	}
	// The resumed call sent the file less what the worker had kept (the
	// broken one logs nothing).
	var sent, kept int64
	for _, line := range strings.Split(m.Output(), "\n") {
		if strings.Contains(line, "download sent") {
			var s, k int64
			for _, f := range strings.Fields(line) {
				fmt.Sscanf(f, "bytes_sent=%d", &s)
				fmt.Sscanf(f, "bytes_kept=%d", &k)
			}
			sent, kept = sent+s, kept+k
		}
	}
	if kept == 0 || sent+kept != size {
		t.Errorf("the download call that completed sent %d bytes and left %d to the worker; want some kept, and %d in all", sent, kept, size)
	}
}
