package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

func (m *uploadMaster) UploadStatus(_ context.Context, req *workerproto.UploadStatusRequest) (*workerproto.UploadStatusResponse, error) {
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
