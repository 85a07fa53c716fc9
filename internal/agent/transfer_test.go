package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

func TestCollectUploadPaths(t *testing.T) {
	dir := t.TempDir()
	root, err := builderRoot(dir, "b")
	if err != nil {
		t.Fatal(err)
	}
	write := func(p, data string) {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("out/report.txt", "ok")
	write("out/sub/deep/data.bin", "0123456789")
	write("other/x.txt", "x")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "bad"), 0o755))
	must(os.Symlink("/etc", filepath.Join(root, "etc")))
	must(os.Symlink("/etc/passwd", filepath.Join(root, "bad", "passwd")))
	must(os.MkdirAll(filepath.Join(root, "linked"), 0o755))
	must(os.Symlink("../other/x.txt", filepath.Join(root, "linked", "x.txt")))
	must(os.Symlink("../out", filepath.Join(root, "linked", "dir")))

	rels := func(fs []uploadFile) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.rel)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		name, path string
		max        int64
		want       []string // rel paths; nil with err
		err        string
	}{
		{"nested dirs", "out", 0, []string{"report.txt", "sub/deep/data.bin"}, ""},
		{"lone file", "out/report.txt", 0, []string{""}, ""},
		{"dot-dot", "../x", 0, nil, "leaves the build directory"},
		{"dot-dot inside", "out/../../x", 0, nil, "leaves the build directory"},
		{"absolute", "/etc/passwd", 0, nil, "leaves the build directory"},
		{"symlink to /etc", "etc", 0, nil, "outside the build directory"},
		{"symlink to /etc/passwd in the tree", "bad", 0, nil, "symlink passwd points to /etc/passwd, outside the build directory"},
		{"symlinks inside the tree", "linked", 0, []string{"x.txt"}, ""},
		{"over max_bytes", "out", 11, nil, "over max_bytes"},
		{"at max_bytes", "out", 12, []string{"report.txt", "sub/deep/data.bin"}, ""},
		{"missing", "nothing", 0, nil, "nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, err := collectUpload(root, tc.path, tc.max)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				if drover.KindOf(err) != drover.Invalid {
					t.Fatalf("err kind = %v, want Invalid", drover.KindOf(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := rels(files); !slices.Equal(got, tc.want) {
				t.Fatalf("files = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDownloadTarget(t *testing.T) {
	dir := t.TempDir()
	root, err := builderRoot(dir, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/tmp", filepath.Join(root, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(root, "alias")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dest, rel string
		want            string // relative to root; "" with err
		err             string
	}{
		{"lone file", "back/report.txt", "", "back/report.txt", ""},
		{"nested", "in", "sub/deep/x", "in/sub/deep/x", ""},
		{"dot-dot from the master", "in", "../../x", "", "bad path"},
		{"absolute from the master", "in", "/etc/x", "", "bad path"},
		{"dot-dot dest", "../x", "", "", "leaves the build directory"},
		{"through a symlink to /tmp", "out", "x", "", "outside the build directory"},
		{"through a symlink inside", "alias", "x", "real/x", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := downloadTarget(root, tc.dest, tc.rel)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(root, filepath.FromSlash(tc.want)); got != want {
				t.Fatalf("target = %s, want %s", got, want)
			}
		})
	}
}

// uploadMaster is a fakeMaster that takes uploads into memory and breaks
// the first upload stream after breakAfter bytes, keeping what it got, as
// a connection cut mid-file does.
type uploadMaster struct {
	*fakeMaster
	breakAfter int

	mu      sync.Mutex
	files   map[string][]byte
	offsets []int64 // the offset each Upload stream started at
	broken  bool
	// stallStatus lists the UploadStatus calls (from 1) left unanswered
	// until the worker gives up on them, as by a stuck master.
	stallStatus map[int]bool
	statusCalls int
}

func startUploadMaster(t *testing.T, breakAfter int) *uploadMaster {
	t.Helper()
	fm := &fakeMaster{t: t, sessions: make(chan *fakeSession, 16)}
	fm.autoAck.Store(true)
	m := &uploadMaster{fakeMaster: fm, breakAfter: breakAfter, files: map[string][]byte{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fm.addr = lis.Addr().String()
	srv := grpc.NewServer()
	workerproto.RegisterWorkerServer(srv, m)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return m
}

func (m *uploadMaster) UploadStatus(ctx context.Context, req *workerproto.UploadStatusRequest) (*workerproto.UploadStatusResponse, error) {
	m.mu.Lock()
	m.statusCalls++
	stall := m.stallStatus[m.statusCalls]
	m.mu.Unlock()
	if stall {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return &workerproto.UploadStatusResponse{Offset: int64(len(m.files[req.GetPath()]))}, nil
}

func (m *uploadMaster) Upload(stream workerproto.Worker_UploadServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h.GetAuth().GetToken() != testWorkerToken || h.GetAuth().GetCommandId() != "up1" {
		return status.Error(codes.Unauthenticated, "bad auth")
	}
	m.mu.Lock()
	m.offsets = append(m.offsets, h.GetOffset())
	data := m.files[h.GetPath()][:h.GetOffset()]
	m.mu.Unlock()
	for {
		c, err := stream.Recv()
		if err != nil {
			return err
		}
		data = append(data, c.GetData()...)
		m.mu.Lock()
		m.files[h.GetPath()] = data
		cut := !m.broken && len(data) >= m.breakAfter
		m.broken = m.broken || cut
		m.mu.Unlock()
		if cut {
			return status.Error(codes.Unavailable, "connection cut")
		}
		if s := c.GetSha256(); s != "" {
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != s {
				return status.Error(codes.DataLoss, "sha256 mismatch")
			}
			return stream.SendAndClose(&workerproto.UploadResult{Size: int64(len(data)), Sha256: s})
		}
	}
}

// An upload step broken mid-file resumes where the master stopped, and
// the master ends up with the file byte for byte.
func TestUploadResumesAfterABreak(t *testing.T) {
	m := startUploadMaster(t, 3*transferChunk)
	dir := t.TempDir()
	data := make([]byte, 5*transferChunk+123)
	for i := range data {
		data[i] = byte(i*31 + i/7)
	}
	if err := os.MkdirAll(filepath.Join(dir, "b", "build", "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b", "build", "out", "data.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	a := newTestAgent(t, m.fakeMaster, dir, nil)
	runAgent(t, a)
	s := m.Session(t)
	s.Run(&workerproto.RunCommand{CommandId: "up1", Builder: "b", BuildId: 1, Step: 1,
		Transfer: &workerproto.Transfer{Kind: workerproto.TransferKind_TRANSFER_KIND_UPLOAD, WorkerPath: "build/out", MasterPath: "results", MaxBytes: 1 << 30}})
	out, f := s.Collect(t, "up1", 30*time.Second)
	var log strings.Builder
	for _, o := range out {
		log.Write(o.GetData())
	}
	if f.GetExitCode() != 0 {
		t.Fatalf("upload finished %v: %s\n%s", f.GetExitCode(), f.GetError(), log.String())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !bytes.Equal(m.files["data.bin"], data) {
		t.Fatalf("the master holds %d bytes, differing from the %d uploaded", len(m.files["data.bin"]), len(data))
	}
	if len(m.offsets) != 2 || m.offsets[0] != 0 || m.offsets[1] < 3*transferChunk {
		t.Fatalf("upload streams started at %v, want 0 then the %d bytes the master held", m.offsets, 3*transferChunk)
	}
	if !strings.Contains(log.String(), "data.bin") {
		t.Errorf("log lacks the file:\n%s", log.String())
	}
}

// memFile is a file a downloadMaster serves: rel is its header path, ""
// for a lone file.
type memFile struct {
	rel  string
	data []byte
}

// downloadMaster is a fakeMaster that serves the download command "dl1"
// from memory, resuming as a master does (DownloadRequest.have and
// partial), and breaks its first Download stream after breakAfter data
// bytes, as a connection cut mid-file does.
type downloadMaster struct {
	*fakeMaster
	breakAfter int64
	files      []memFile
	// before, if set, runs as Download call n (from 1) begins, before
	// anything is sent.
	before func(n int)
	// corrupt lists the calls whose data has a byte flipped in each file
	// they send from byte 0 (the sha256 stays the true one).
	corrupt map[int]bool
	// refuse lists the calls that fail at once, after before, as while
	// the master is unreachable.
	refuse map[int]bool
	// stall lists the calls that send nothing, after before, until the
	// worker gives up on them, as a stuck master does.
	stall map[int]bool

	mu       sync.Mutex
	requests []*workerproto.DownloadRequest
	sent     int64 // data bytes sent, over all calls
	broken   bool
}

func startDownloadMaster(t *testing.T, breakAfter int64, files ...memFile) *downloadMaster {
	t.Helper()
	fm := &fakeMaster{t: t, sessions: make(chan *fakeSession, 16)}
	fm.autoAck.Store(true)
	m := &downloadMaster{fakeMaster: fm, breakAfter: breakAfter, files: files}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fm.addr = lis.Addr().String()
	srv := grpc.NewServer()
	workerproto.RegisterWorkerServer(srv, m)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return m
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (m *downloadMaster) Download(req *workerproto.DownloadRequest, stream workerproto.Worker_DownloadServer) error {
	if req.GetAuth().GetToken() != testWorkerToken || req.GetAuth().GetCommandId() != "dl1" {
		return status.Error(codes.Unauthenticated, "bad auth")
	}
	m.mu.Lock()
	m.requests = append(m.requests, proto.CloneOf(req))
	n := len(m.requests)
	m.mu.Unlock()
	if m.before != nil {
		m.before(n)
	}
	if m.refuse[n] {
		return status.Error(codes.Unavailable, "master unreachable")
	}
	if m.stall[n] {
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	have := map[string]*workerproto.DownloadHave{}
	for _, h := range req.GetHave() {
		have[h.GetPath()] = h
	}
	for _, f := range m.files {
		size, sum := int64(len(f.data)), hexSum(f.data)
		var off int64
		if h := have[f.rel]; h != nil && h.GetSize() == size && h.GetSha256() == sum {
			off = size
		} else if p := req.GetPartial(); p != nil && p.GetPath() == f.rel && p.GetOffset() <= size {
			off = p.GetOffset()
		}
		data := f.data
		if m.corrupt[n] && off == 0 {
			data = bytes.Clone(data)
			data[len(data)/2] ^= 0xff
		}
		if err := stream.Send(&workerproto.DownloadChunk{Header: &workerproto.DownloadFileHeader{Path: f.rel, Size: size, Mode: 0o640, Offset: off}}); err != nil {
			return err
		}
		for off < size {
			chunk := data[off:min(off+transferChunk, size)]
			m.mu.Lock()
			cut := !m.broken && m.sent+int64(len(chunk)) > m.breakAfter
			if cut {
				chunk = chunk[:m.breakAfter-m.sent]
				m.broken = true
			}
			m.sent += int64(len(chunk))
			m.mu.Unlock()
			if len(chunk) > 0 {
				if err := stream.Send(&workerproto.DownloadChunk{Data: chunk}); err != nil {
					return err
				}
			}
			if cut {
				return status.Error(codes.Unavailable, "connection cut")
			}
			off += int64(len(chunk))
		}
		if err := stream.Send(&workerproto.DownloadChunk{Sha256: sum}); err != nil {
			return err
		}
	}
	return nil
}

// runDownload runs the download command dl1 to dest on a worker in dir
// and returns its Finished and log.
func runDownload(t *testing.T, m *downloadMaster, dir, dest string) (*workerproto.Finished, string) {
	t.Helper()
	a := newTestAgent(t, m.fakeMaster, dir, nil)
	runAgent(t, a)
	s := m.Session(t)
	s.Run(&workerproto.RunCommand{CommandId: "dl1", Builder: "b", BuildId: 1, Step: 2,
		Transfer: &workerproto.Transfer{Kind: workerproto.TransferKind_TRANSFER_KIND_DOWNLOAD, WorkerPath: dest, MasterPath: "artifact:x", MaxBytes: 1 << 30}})
	out, f := s.Collect(t, "dl1", 30*time.Second)
	var log strings.Builder
	for _, o := range out {
		log.Write(o.GetData())
	}
	return f, log.String()
}

// testData is n bytes of a pattern that differs at every offset mod 251.
func testData(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31+i/7) ^ seed
	}
	return b
}

// tempFiles lists the temporary download files left under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var left []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".drover-download-") {
			left = append(left, p)
		}
		return nil
	})
	return left
}

func wantFile(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, differing from the master's %d", p, len(got), len(want))
	}
}

// A download step broken mid-file asks the master to go on from the
// bytes it holds, gets only the rest, and ends with the file byte for
// byte.
func TestDownloadResumesAfterABreak(t *testing.T) {
	data := testData(5*transferChunk+123, 0)
	cutAt := int64(3*transferChunk + 1000)
	m := startDownloadMaster(t, cutAt, memFile{"", data})
	dir := t.TempDir()
	f, log := runDownload(t, m, dir, "in/data.bin")
	if f.GetExitCode() != 0 {
		t.Fatalf("download finished %v: %s\n%s", f.GetExitCode(), f.GetError(), log)
	}
	wantFile(t, filepath.Join(dir, "b", "in", "data.bin"), data)
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.requests) != 2 || m.requests[0].GetPartial() != nil || len(m.requests[0].GetHave()) != 0 {
		t.Fatalf("requests = %v, want a plain one then a resumed one", m.requests)
	}
	if p := m.requests[1].GetPartial(); p == nil || p.GetPath() != "" || p.GetOffset() != cutAt || len(m.requests[1].GetHave()) != 0 {
		t.Fatalf("second request = %v, want partial {\"\" %d}", m.requests[1], cutAt)
	}
	if m.sent != int64(len(data)) {
		t.Fatalf("the master sent %d bytes for a file of %d", m.sent, len(data))
	}
	if !strings.Contains(log, fmt.Sprintf("resuming at byte %d of %d", cutAt, len(data))) || !strings.Contains(log, "downloaded 1 files") {
		t.Errorf("log:\n%s", log)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

// A kept partial file whose bytes changed meanwhile fails the whole
// file's sha256 when resumed; it is fetched again from byte 0 and ends
// right. If that copy fails too, the step fails.
func TestDownloadRefetchesACorruptPartial(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt map[int]bool // calls whose fresh files the master corrupts
		fail    bool
	}{
		{"fetched again", nil, false},
		{"fetched again and still wrong", map[int]bool{3: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := testData(4*transferChunk+7, 1)
			cutAt := int64(2*transferChunk + 99)
			m := startDownloadMaster(t, cutAt, memFile{"", data})
			m.corrupt = tc.corrupt
			dir := t.TempDir()
			m.before = func(n int) {
				if n != 2 {
					return
				}
				left := tempFiles(t, dir)
				if len(left) != 1 {
					t.Errorf("temporary files kept after the break: %q, want 1", left)
					return
				}
				f, err := os.OpenFile(left[0], os.O_WRONLY, 0)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				if _, err := f.WriteAt([]byte("garbage"), 1000); err != nil {
					t.Error(err)
				}
			}
			f, log := runDownload(t, m, dir, "in/data.bin")
			m.mu.Lock()
			reqs, sent := m.requests, m.sent
			m.mu.Unlock()
			if len(reqs) != 3 || reqs[1].GetPartial().GetOffset() != cutAt || reqs[2].GetPartial() != nil {
				t.Fatalf("requests = %v, want plain, partial at %d, plain", reqs, cutAt)
			}
			if want := int64(2 * len(data)); sent != want {
				t.Errorf("the master sent %d bytes, want %d: the file, then the file again", sent, want)
			}
			if !strings.Contains(log, "fetching it again from the start") {
				t.Errorf("log:\n%s", log)
			}
			if left := tempFiles(t, dir); len(left) != 0 {
				t.Errorf("temporary files left: %q", left)
			}
			if tc.fail {
				if f.GetExitCode() == 0 || !strings.Contains(f.GetError(), "sha256") {
					t.Fatalf("download finished %d (%s), want a sha256 failure\n%s", f.GetExitCode(), f.GetError(), log)
				}
				if _, err := os.Stat(filepath.Join(dir, "b", "in", "data.bin")); err == nil {
					t.Fatal("a corrupt download was moved into place")
				}
				return
			}
			if f.GetExitCode() != 0 {
				t.Fatalf("download finished %v: %s\n%s", f.GetExitCode(), f.GetError(), log)
			}
			wantFile(t, filepath.Join(dir, "b", "in", "data.bin"), data)
		})
	}
}

// A directory download broken in its third file tells the master the two
// files it has whole and the bytes of the third; the master sends only
// the rest of the third and the files after it. A finished file changed
// on disk before a retry no longer matches, and is sent again.
func TestDownloadDirectoryResumesMissingFiles(t *testing.T) {
	files := []memFile{
		{"a.txt", testData(1000, 2)},
		{"sub/b.bin", testData(2*transferChunk, 3)},
		{"sub/c.bin", testData(3*transferChunk+5, 4)},
		{"d.txt", testData(10, 5)},
		{"e.txt", testData(300, 6)},
	}
	var total int64
	for _, f := range files {
		total += int64(len(f.data))
	}
	cutAt := int64(1000 + 2*transferChunk + transferChunk + 500)
	m := startDownloadMaster(t, cutAt, files...)
	dir := t.TempDir()
	m.refuse = map[int]bool{2: true}
	m.before = func(n int) {
		if n == 2 {
			if err := os.WriteFile(filepath.Join(dir, "b", "in", "a.txt"), testData(1000, 9), 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	f, log := runDownload(t, m, dir, "in")
	if f.GetExitCode() != 0 {
		t.Fatalf("download finished %v: %s\n%s", f.GetExitCode(), f.GetError(), log)
	}
	for _, mf := range files {
		wantFile(t, filepath.Join(dir, "b", "in", filepath.FromSlash(mf.rel)), mf.data)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.requests) != 3 {
		t.Fatalf("requests = %v, want 3", m.requests)
	}
	for i, aSum := range map[int]string{1: hexSum(files[0].data), 2: hexSum(testData(1000, 9))} {
		r := m.requests[i]
		have := map[string]*workerproto.DownloadHave{}
		for _, h := range r.GetHave() {
			have[h.GetPath()] = h
		}
		if len(have) != 2 || have["sub/b.bin"].GetSha256() != hexSum(files[1].data) || have["sub/b.bin"].GetSize() != 2*transferChunk ||
			have["a.txt"].GetSha256() != aSum || have["a.txt"].GetSize() != 1000 {
			t.Fatalf("request %d: have = %v, want a.txt (sha256 %s) and sub/b.bin", i+1, r.GetHave(), aSum)
		}
		if p := r.GetPartial(); p.GetPath() != "sub/c.bin" || p.GetOffset() != transferChunk+500 {
			t.Fatalf("request %d: partial = %v, want sub/c.bin at %d", i+1, p, transferChunk+500)
		}
	}
	// Everything once, plus a.txt again.
	if want := total + 1000; m.sent != want {
		t.Fatalf("the master sent %d bytes, want %d", m.sent, want)
	}
	if !strings.Contains(log, "downloaded 5 files") {
		t.Errorf("log:\n%s", log)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("temporary files left: %q", left)
	}
}
