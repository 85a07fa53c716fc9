package workerhub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/drover-ci/drover"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

type transferFixture struct {
	*fixture
	dir   string // the artifact directory
	files string
	auth  func(id string) *pb.TransferAuth
	build *drover.Build
}

func newTransferFixture(t *testing.T, cmds map[string]*pb.RunCommand) *transferFixture {
	t.Helper()
	dir, files := t.TempDir(), t.TempDir()
	f := newFixtureWith(t, func(o *Options) {
		o.ArtifactDir, o.FilesDir = dir, files
	})
	tok := f.enrollWorker(t, "w1")
	ctx := context.Background()
	req := &drover.BuildRequest{Builder: "linux", Reason: "test", Submitted: time.Now()}
	if err := f.store.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
		t.Fatal(err)
	}
	b := &drover.Build{Worker: "w1", Started: time.Now()}
	if err := f.store.ClaimRequest(ctx, req.ID, b); err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		c.BuildId = b.ID
		f.hub.Track(c, "w1", 0, 1, 0) // the commands the master runs on w1 now
	}
	return &transferFixture{fixture: f, dir: dir, files: files, build: b,
		auth: func(id string) *pb.TransferAuth { return &pb.TransferAuth{Worker: "w1", Token: tok, CommandId: id} }}
}

func upload(id string, maxBytes int64, dest string) *pb.RunCommand {
	return &pb.RunCommand{CommandId: id, Step: 3, Transfer: &pb.Transfer{Kind: pb.TransferKind_TRANSFER_KIND_UPLOAD, WorkerPath: "out", MasterPath: dest, MaxBytes: maxBytes}}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sendUpload sends data[from:to] of a file at offset from; with final,
// the sha256 ends it and the result is returned.
func (f *transferFixture) sendUpload(t *testing.T, id, path string, data []byte, from, to int, final bool) (*pb.UploadResult, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := f.client.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hdr := &pb.UploadFileHeader{Auth: f.auth(id), Path: path, Size: int64(len(data)), Mode: 0o640, Offset: int64(from)}
	if err := st.Send(&pb.UploadChunk{Header: hdr}); err != nil {
		return st.CloseAndRecv()
	}
	for i := from; i < to; i += 1000 {
		if err := st.Send(&pb.UploadChunk{Data: data[i:min(i+1000, to)]}); err != nil {
			return st.CloseAndRecv()
		}
	}
	if !final {
		// The connection breaks: the stream is cancelled mid-file. Wait
		// until the master has written what was sent.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			s, err := f.client.UploadStatus(context.Background(), &pb.UploadStatusRequest{Auth: f.auth(id), Path: path, Size: int64(len(data))})
			if err == nil && s.GetOffset() == int64(to) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		return nil, nil
	}
	if err := st.Send(&pb.UploadChunk{Sha256: sum(data)}); err != nil {
		return st.CloseAndRecv()
	}
	return st.CloseAndRecv()
}

func TestUploadResumes(t *testing.T) {
	f := newTransferFixture(t, map[string]*pb.RunCommand{"c1": upload("c1", 1<<20, "results")})
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(i * 7 % 251)
	}
	// An upload interrupted after some chunks...
	if _, err := f.sendUpload(t, "c1", "sub/data.bin", data, 0, 120_000, false); err != nil {
		t.Fatal(err)
	}
	st, err := f.client.UploadStatus(context.Background(), &pb.UploadStatusRequest{Auth: f.auth("c1"), Path: "sub/data.bin", Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetOffset() != 120_000 {
		t.Fatalf("offset after the interruption = %d, want 120000", st.GetOffset())
	}
	// ...resumes where the master stopped, and the artifact is whole.
	res, err := f.sendUpload(t, "c1", "sub/data.bin", data, int(st.GetOffset()), len(data), true)
	if err != nil {
		t.Fatalf("resumed upload: %v", err)
	}
	if res.GetSha256() != sum(data) || res.GetSize() != int64(len(data)) {
		t.Fatalf("result = %v", res)
	}
	got, err := os.ReadFile(filepath.Join(f.dir, itoa(f.build.ID), "results", "sub", "data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("stored artifact differs from the uploaded file")
	}
	as, err := f.store.ListArtifacts(context.Background(), f.build.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].Path != "results/sub/data.bin" || as[0].Size != int64(len(data)) || as[0].SHA256 != sum(data) || as[0].StepIndex != 3 {
		t.Fatalf("artifacts = %+v", as)
	}
	// A wrong offset is refused, for the worker to ask again.
	_, err = f.sendUpload(t, "c1", "other.bin", data, 5, len(data), true)
	wantCode(t, err, codes.Aborted)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestUploadRefusals(t *testing.T) {
	f := newTransferFixture(t, map[string]*pb.RunCommand{
		"c1":  upload("c1", 1000, "results"),
		"dl":  {CommandId: "dl", Transfer: &pb.Transfer{Kind: pb.TransferKind_TRANSFER_KIND_DOWNLOAD, MasterPath: "files/x"}},
		"bad": upload("bad", 1000, "../escape"),
	})
	small := []byte("hello")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		id   string
		path string
		data []byte
		code codes.Code
	}{
		{"dot-dot path", "c1", "../x", small, codes.InvalidArgument},
		{"absolute path", "c1", "/etc/passwd", small, codes.InvalidArgument},
		{"backslash path", "c1", `a\..\..\x`, small, codes.InvalidArgument},
		{"destination escaping", "bad", "x", small, codes.InvalidArgument},
		{"over max_bytes", "c1", "big", make([]byte, 1001), codes.ResourceExhausted},
		{"unknown command", "nope", "x", small, codes.NotFound},
		{"not an upload", "dl", "x", small, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.client.UploadStatus(ctx, &pb.UploadStatusRequest{Auth: f.auth(tc.id), Path: tc.path, Size: int64(len(tc.data))})
			wantCode(t, err, tc.code)
			_, err = f.sendUpload(t, tc.id, tc.path, tc.data, 0, len(tc.data), true)
			wantCode(t, err, tc.code)
		})
	}
	bad := f.auth("c1")
	bad.Token += "x"
	_, err := f.client.UploadStatus(ctx, &pb.UploadStatusRequest{Auth: bad, Path: "x", Size: 1})
	wantCode(t, err, codes.Unauthenticated)

	// A sha256 that does not match drops the file.
	st, err := f.client.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&pb.UploadChunk{Header: &pb.UploadFileHeader{Auth: f.auth("c1"), Path: "r.txt", Size: 5}})
	st.Send(&pb.UploadChunk{Data: small, Sha256: sum([]byte("other"))})
	_, err = st.CloseAndRecv()
	wantCode(t, err, codes.DataLoss)
	if as, _ := f.store.ListArtifacts(ctx, f.build.ID); len(as) != 0 {
		t.Fatalf("a corrupt upload was indexed: %+v", as)
	}
	// Two files of one step may not exceed max_bytes together.
	if _, err := f.sendUpload(t, "c1", "a", make([]byte, 600), 0, 600, true); err != nil {
		t.Fatal(err)
	}
	_, err = f.sendUpload(t, "c1", "b", make([]byte, 600), 0, 600, true)
	wantCode(t, err, codes.ResourceExhausted)
}

// download receives every file of a download: path → content.
func (f *transferFixture) download(t *testing.T, id string) (map[string][]byte, error) {
	t.Helper()
	st, err := f.client.Download(context.Background(), &pb.DownloadRequest{Auth: f.auth(id)})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	var cur string
	var h = sha256.New()
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if hd := m.GetHeader(); hd != nil {
			cur, h = hd.GetPath(), sha256.New()
			out[cur] = []byte{}
		}
		out[cur] = append(out[cur], m.GetData()...)
		h.Write(m.GetData())
		if s := m.GetSha256(); s != "" && s != hex.EncodeToString(h.Sum(nil)) {
			t.Fatalf("%s: sha256 %s does not match its data", cur, s)
		}
	}
}

func TestDownload(t *testing.T) {
	dl := func(id, src string, max int64) *pb.RunCommand {
		return &pb.RunCommand{CommandId: id, Transfer: &pb.Transfer{Kind: pb.TransferKind_TRANSFER_KIND_DOWNLOAD, MasterPath: src, WorkerPath: "in", MaxBytes: max}}
	}
	f := newTransferFixture(t, map[string]*pb.RunCommand{
		"file":   dl("file", "artifact:results/report.txt", 0),
		"dir":    dl("dir", "artifact:results", 0),
		"files":  dl("files", "files/tools", 0),
		"escape": dl("escape", "files/link", 0),
		"dotdot": dl("dotdot", "artifact:../x", 0),
		"big":    dl("big", "artifact:results", 10),
		"up":     upload("up", 0, "results"),
	})
	if _, err := f.sendUpload(t, "up", "report.txt", []byte("all good\n"), 0, 9, true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sendUpload(t, "up", "sub/data.bin", bytes.Repeat([]byte{1, 2, 3}, 100_000), 0, 300_000, true); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(f.files, "tools"), 0o755)
	os.WriteFile(filepath.Join(f.files, "tools", "t.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("/etc", filepath.Join(f.files, "link"))
	os.Symlink("/etc/passwd", filepath.Join(f.files, "tools", "passwd"))

	got, err := f.download(t, "file")
	if err != nil || string(got[""]) != "all good\n" || len(got) != 1 {
		t.Fatalf("download of a file = %q, %v", got, err)
	}
	got, err = f.download(t, "dir")
	if err != nil || string(got["report.txt"]) != "all good\n" || len(got["sub/data.bin"]) != 300_000 || len(got) != 2 {
		t.Fatalf("download of a directory: %d files, %v", len(got), err)
	}
	got, err = f.download(t, "files")
	if err != nil || len(got) != 1 || string(got["t.sh"]) != "#!/bin/sh\n" {
		t.Fatalf("download of files/tools (the symlink to /etc/passwd not followed) = %q, %v", got, err)
	}
	_, err = f.download(t, "escape")
	wantCode(t, err, codes.InvalidArgument)
	_, err = f.download(t, "dotdot")
	wantCode(t, err, codes.InvalidArgument)
	_, err = f.download(t, "big")
	wantCode(t, err, codes.ResourceExhausted)
	_, err = f.download(t, "up")
	wantCode(t, err, codes.FailedPrecondition)
}

// gotFile is one file of a Download stream as sent.
type gotFile struct {
	offset, size int64
	data         []byte // the data sent, from offset
	sha256       string
}

// downloadWith makes a Download request and returns what it sends, by
// path, in order.
func (f *transferFixture) downloadWith(t *testing.T, req *pb.DownloadRequest) ([]string, map[string]*gotFile) {
	t.Helper()
	st, err := f.client.Download(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	got := map[string]*gotFile{}
	var cur *gotFile
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return order, got
		}
		if err != nil {
			t.Fatal(err)
		}
		if h := m.GetHeader(); h != nil {
			cur = &gotFile{offset: h.GetOffset(), size: h.GetSize(), data: []byte{}}
			got[h.GetPath()] = cur
			order = append(order, h.GetPath())
		}
		cur.data = append(cur.data, m.GetData()...)
		if s := m.GetSha256(); s != "" {
			cur.sha256 = s
		}
	}
}

// A retried download names what the worker holds: files it has whole
// with the master's size and sha256 are confirmed without data, the
// partial file is sent from its offset, the rest whole; every file ends
// with the whole file's sha256.
func TestDownloadResumes(t *testing.T) {
	dl := func(id, src string) *pb.RunCommand {
		return &pb.RunCommand{CommandId: id, Transfer: &pb.Transfer{Kind: pb.TransferKind_TRANSFER_KIND_DOWNLOAD, MasterPath: src, WorkerPath: "in"}}
	}
	f := newTransferFixture(t, map[string]*pb.RunCommand{
		"file": dl("file", "artifact:results/sub/data.bin"),
		"dir":  dl("dir", "artifact:results"),
		"up":   upload("up", 0, "results"),
	})
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(i * 13 % 253)
	}
	report, notes := []byte("all good\n"), []byte("some notes\n")
	for p, b := range map[string][]byte{"sub/data.bin": data, "report.txt": report, "z/notes.txt": notes} {
		if _, err := f.sendUpload(t, "up", p, b, 0, len(b), true); err != nil {
			t.Fatal(err)
		}
	}
	partial := func(p string, off int64) *pb.DownloadPartial { return &pb.DownloadPartial{Path: p, Offset: off} }

	t.Run("lone file from an offset", func(t *testing.T) {
		_, got := f.downloadWith(t, &pb.DownloadRequest{Auth: f.auth("file"), Partial: partial("", 120_000)})
		g := got[""]
		if len(got) != 1 || g.offset != 120_000 || g.size != int64(len(data)) || !bytes.Equal(g.data, data[120_000:]) || g.sha256 != sum(data) {
			t.Fatalf("got offset %d size %d, %d bytes, sha256 %s; want the bytes from 120000 and the whole file's sha256", g.offset, g.size, len(g.data), g.sha256)
		}
	})
	for _, tc := range []struct {
		name string
		p    *pb.DownloadPartial
	}{
		{"past the file's end", partial("", int64(len(data))+1)},
		{"another path", partial("other", 1000)},
		{"negative", partial("", -5)},
	} {
		t.Run("partial "+tc.name, func(t *testing.T) {
			_, got := f.downloadWith(t, &pb.DownloadRequest{Auth: f.auth("file"), Partial: tc.p})
			if g := got[""]; g.offset != 0 || !bytes.Equal(g.data, data) || g.sha256 != sum(data) {
				t.Fatalf("got offset %d, %d bytes; want the whole file", g.offset, len(g.data))
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		order, got := f.downloadWith(t, &pb.DownloadRequest{Auth: f.auth("dir"),
			Have: []*pb.DownloadHave{
				{Path: "report.txt", Size: int64(len(report)), Sha256: sum(report)},
				{Path: "z/notes.txt", Size: int64(len(notes)), Sha256: sum([]byte("other notes"))}, // differs: sent again
				{Path: "elsewhere", Size: 1, Sha256: sum([]byte("x"))},                             // not the master's: ignored
			},
			Partial: partial("sub/data.bin", 250_000)})
		if len(order) != 3 || order[0] != "report.txt" || order[1] != "sub/data.bin" || order[2] != "z/notes.txt" {
			t.Fatalf("files sent = %q, want every file of the source in order", order)
		}
		if g := got["report.txt"]; g.offset != g.size || len(g.data) != 0 || g.sha256 != sum(report) {
			t.Errorf("report.txt: offset %d of %d, %d bytes; want its header and sha256 alone", g.offset, g.size, len(g.data))
		}
		if g := got["sub/data.bin"]; g.offset != 250_000 || !bytes.Equal(g.data, data[250_000:]) || g.sha256 != sum(data) {
			t.Errorf("sub/data.bin: offset %d, %d bytes; want the bytes from 250000", g.offset, len(g.data))
		}
		if g := got["z/notes.txt"]; g.offset != 0 || !bytes.Equal(g.data, notes) || g.sha256 != sum(notes) {
			t.Errorf("z/notes.txt: offset %d, %q; want it whole", g.offset, g.data)
		}
	})
	t.Run("have with another size", func(t *testing.T) {
		_, got := f.downloadWith(t, &pb.DownloadRequest{Auth: f.auth("dir"),
			Have: []*pb.DownloadHave{{Path: "report.txt", Size: 3, Sha256: sum(report)}}})
		if g := got["report.txt"]; g.offset != 0 || !bytes.Equal(g.data, report) {
			t.Errorf("report.txt: offset %d, %q; want it whole", g.offset, g.data)
		}
	})
}
