package e2e

import (
	"context"
	"html"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover/internal/testenv"
)

const reconfigBase = `
drover.builder(name = "hello", steps = [drover.shell("echo hello")])
`

// A broken config file is refused by `drover reconfig` with its file:line
// errors and exit 1, the master keeps the config in force and its admin
// page shows the error; the fixed file, with a builder more, is taken and
// the builder appears in the API.
func TestReconfig(t *testing.T) {
	t.Parallel()
	m := testenv.StartMaster(t, reconfigBase)
	ctx := context.Background()
	path := filepath.Join(m.Dir, "master.star")

	before, err := m.Client.ConfigStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.Hash == "" || before.Builders != 1 || before.LastError != "" {
		t.Fatalf("status at start %+v, want a hash, 1 builder and no error", before)
	}
	page := adminPage(t, m)
	if !strings.Contains(page, before.Hash[:12]) || strings.Contains(page, `id="config-error"`) {
		t.Fatalf("admin page at start lacks the hash %s or shows an error:\n%s", before.Hash[:12], page)
	}

	// A broken file: refused, with the file and line of the mistake.
	broken := reconfigBase + `drover.builder(name = "second", steps = [
    drover.shell("make", timeout = "-5s"),
])
`
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := testenv.Run(t, time.Minute, m.Env(), "reconfig")
	fileLine := regexp.MustCompile(`master\.star:4:\d+: drover\.shell: timeout`)
	if code != 1 || !fileLine.MatchString(out) {
		t.Fatalf("drover reconfig of a broken config: exit %d, want 1 with master.star:4\n%s", code, out)
	}
	st, err := m.Client.ConfigStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Hash != before.Hash || st.Builders != 1 || !fileLine.MatchString(st.LastError) || st.ErrorAt.IsZero() {
		t.Fatalf("status after the refusal %+v, want the old config and the error", st)
	}
	page = adminPage(t, m)
	if !strings.Contains(page, `id="config-error"`) || !fileLine.MatchString(html.UnescapeString(page)) || !strings.Contains(page, before.Hash[:12]) {
		t.Fatalf("admin page after the refusal lacks the error or the old hash:\n%s", page)
	}
	// The fixed file, with a builder more, takes over.
	fixed := reconfigBase + `drover.builder(name = "second", steps = [drover.shell("echo second")])
`
	if err := os.WriteFile(path, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = testenv.Run(t, time.Minute, m.Env(), "reconfig")
	if code != 0 || !regexp.MustCompile(`config reloaded: hash [0-9a-f]{12}…, 2 builders`).MatchString(out) {
		t.Fatalf("drover reconfig of a good config: exit %d\n%s", code, out)
	}
	st, err = m.Client.ConfigStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Hash == before.Hash || st.Builders != 2 || st.LastError != "" || !strings.Contains(out, st.Hash[:12]) {
		t.Fatalf("status after the reload %+v (reconfig said %q)", st, out)
	}
	if _, err := m.Client.Builder(ctx, "second"); err != nil {
		t.Fatalf("the new builder is not in the API: %v", err)
	}
	page = adminPage(t, m)
	if !strings.Contains(page, st.Hash[:12]) || strings.Contains(page, `id="config-error"`) {
		t.Fatalf("admin page after the reload lacks the new hash or still shows the error:\n%s", page)
	}

	// Without an admin token, reconfig is refused and changes nothing.
	out, code = testenv.Run(t, time.Minute, []string{"DROVER_MASTER=" + m.URL(), "DROVER_TOKEN="}, "reconfig")
	if code == 0 || !strings.Contains(out, "unauthorized") {
		t.Fatalf("drover reconfig without a token: exit %d\n%s", code, out)
	}
	if after, err := m.Client.ConfigStatus(ctx); err != nil || after.LoadedAt != st.LoadedAt {
		t.Fatalf("status after a refused caller %+v, %v", after, err)
	}
}

// adminPage returns the master's /admin page.
func adminPage(t *testing.T, m *testenv.Master) string {
	t.Helper()
	resp, err := http.Get(m.URL() + "/admin")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /admin: %s\n%s", resp.Status, body)
	}
	return string(body)
}
