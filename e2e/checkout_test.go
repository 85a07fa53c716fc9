package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// The worker checks out with git itself: a partial clone (filter =
// "blob:none") of a real server-side repository served over git's file://
// transport, which leaves old blobs on the server; and a source that
// refuses connections ends as infra, retried, then an exception that
// blames the source, not the worker.
func TestCheckoutByWorker(t *testing.T) {
	t.Parallel()
	work := testenv.NewRepo(t, map[string]string{"data.txt": strings.Repeat("old\n", 500), "VERSION": "1\n"})
	rev := testenv.Commit(t, work, map[string]string{"data.txt": strings.Repeat("new\n", 500)}, "new data")
	server := filepath.Join(t.TempDir(), "server.git")
	testenv.Git(t, filepath.Dir(server), "clone", "-q", "--bare", work, server)
	testenv.Git(t, server, "config", "uploadpack.allowFilter", "true")

	// A port that refuses connections: listened on, then closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String() + "/gone.git"
	l.Close()

	m := testenv.StartMaster(t, fmt.Sprintf(`
drover.master(max_retries = 2)
src = drover.git(%q, branches = ["main"], name = "proj")
gone = drover.git(%q, branches = ["main"], name = "gone")
drover.builder(name = "partial", steps = [
    drover.checkout(src, mode = "full", filter = "blob:none", reclone_on_failure = True),
    drover.shell("test \"$(git config remote.origin.partialclonefilter)\" = blob:none && git rev-list --objects --all --missing=print | grep -q '^?' && grep -q new data.txt && echo partial-clone-ok", name = "inspect"),
])
drover.builder(name = "unreachable", steps = [
    drover.checkout(gone),
    drover.shell("echo never", name = "after"),
])
`, "file://"+server, refused))
	m.StartWorker(t, "w1")
	ctx := context.Background()

	d := m.WaitBuild(t, m.Force(t, "partial", api.ForceRequest{}).ID, 2*time.Minute)
	if d.Build.Result != drover.Success {
		for i := range d.Steps {
			t.Logf("step %d log:\n%s", i, m.StepLog(t, d, i))
		}
		t.Fatalf("partial-clone build %s (%s)", d.Build.Result, d.Build.Summary)
	}
	if got := d.Build.Properties["got_revision"]; got != rev {
		t.Errorf("got_revision = %q, want %q", got, rev)
	}
	log := m.StepLog(t, d, 0)
	for _, want := range []string{"by the worker", "$ git clone --no-checkout --progress --filter=blob:none --branch main", "got_revision=" + rev} {
		if !strings.Contains(log, want) {
			t.Errorf("checkout log lacks %q:\n%s", want, log)
		}
	}
	if log := m.StepLog(t, d, 1); !strings.Contains(log, "partial-clone-ok") {
		t.Errorf("the clone is not partial:\n%s", log)
	}

	req := m.Force(t, "unreachable", api.ForceRequest{})
	d = m.WaitBuild(t, req.ID, 2*time.Minute)
	if d.Build.Result != drover.Exception || !d.Build.Result.IsInfra() {
		t.Fatalf("unreachable source: build %s (%s), want exception", d.Build.Result, d.Build.Summary)
	}
	if !strings.Contains(d.Build.Summary, "source gone ("+refused+")") || !strings.Contains(d.Build.Summary, "gave up after 2 tries") {
		t.Errorf("summary %q does not blame the source, or was not retried", d.Build.Summary)
	}
	if d.Steps[1].Result != drover.Skipped {
		t.Errorf("the step after a failed checkout: %s, want skipped", d.Steps[1].Result)
	}
	if log := m.StepLog(t, d, 0); !strings.Contains(log, "an infra failure of source gone") || !strings.Contains(log, "not of worker w1") {
		t.Errorf("checkout log does not blame the source:\n%s", log)
	}
	r, err := m.Client.Request(ctx, req.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Builds) != 2 || r.Builds[1].Result != drover.Retry {
		t.Errorf("request builds = %+v, want a retry then the exception", r.Builds)
	}
}
