package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// Steps publish links from the config and from inside their command
// (`drover step url`), and set properties (`drover step property`) that
// later steps interpolate, and upload artifacts (`drover step upload`);
// the API and the build page show the links, and `drover step` outside a
// build fails clearly.
func TestStepLinksAndProperties(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t)
	config := strings.NewReplacer("BIN", bin, "PROP", "%(prop:").Replace(`
drover.builder(name = "links", steps = [
    drover.shell(
        "'BIN' step url report https://example.org/r/PROPbuildnumber)s && " +
        "'BIN' step url local file:///tmp/report.html && " +
        "'BIN' step property version 1.2.3 && " +
        "echo coverage 97% > report.txt && 'BIN' step upload report.txt --dest reports/r.txt && " +
        "echo published",
        name = "report",
        urls = {"coverage": "https://cov.example.org/PROPbuildnumber)s/"},
    ),
    drover.shell("echo version=PROPversion)s", name = "later"),
])
`)
	m := testenv.StartMaster(t, config)
	m.StartWorker(t, "w1")

	r := m.Force(t, "links", api.ForceRequest{})
	d := m.WaitBuild(t, r.ID, 2*time.Minute)
	if d.Build.Result != drover.Success {
		t.Fatalf("build %s (%s); report log:\n%s", d.Build.Result, d.Build.Summary, m.StepLog(t, d, 0))
	}
	n := d.Build.Number
	want := map[string]string{
		"coverage": fmt.Sprintf("https://cov.example.org/%d/", n),
		"report":   fmt.Sprintf("https://example.org/r/%d", n),
		"local":    "file:///tmp/report.html",
	}
	got := d.Steps[0].URLs
	if len(got) != len(want) {
		t.Errorf("step urls = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("step url %s = %q, want %q", k, got[k], v)
		}
	}
	if len(d.Steps[1].URLs) != 0 {
		t.Errorf("later step has urls %v", d.Steps[1].URLs)
	}
	if log := m.StepLog(t, d, 1); !strings.Contains(log, "version=1.2.3") {
		t.Errorf("later step's log lacks the published property:\n%s", log)
	}
	if d.Build.Properties["version"] != "1.2.3" {
		t.Errorf("build properties = %v, want version=1.2.3", d.Build.Properties)
	}

	// `drover step upload` stored the file as an artifact of the build.
	arts, err := m.Client.Artifacts(context.Background(), d.Build.ID)
	if err != nil {
		t.Fatal(err)
	}
	var uploaded bool
	for _, a := range arts {
		if a.Path == "reports/r.txt" {
			uploaded = a.Size == int64(len("coverage 97%\n"))
		}
	}
	if !uploaded {
		t.Errorf("artifacts = %+v, want reports/r.txt of 13 bytes", arts)
	}

	// The build page links the http(s) URLs, with rel="noopener", and
	// shows the others as text.
	resp, err := http.Get(fmt.Sprintf("%s/builds/%d", m.URL(), d.Build.ID))
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("build page: %d %v", resp.StatusCode, err)
	}
	html := string(page)
	for _, name := range []string{"coverage", "report"} {
		link := fmt.Sprintf(`<a class="steplink" href="%s" rel="noopener"`, want[name])
		if !strings.Contains(html, link) {
			t.Errorf("build page lacks %s", link)
		}
	}
	if strings.Contains(html, `href="file:`) || !strings.Contains(html, "local: file:///tmp/report.html") {
		t.Errorf("build page does not show the file: link as text only")
	}

	// Outside a build, `drover step` says so and fails.
	out, code := testenv.Run(t, 30*time.Second, []string{"DROVER_CONTROL=", "DROVER_COMMAND_ID="}, "step", "url", "x", "https://example.org/")
	if code != 1 || !strings.Contains(out, "not inside a build") {
		t.Errorf("drover step url outside a build: exit %d, output %q", code, out)
	}
}
