package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover/internal/service"
	"github.com/drover-ci/drover/internal/testenv"
)

// `drover worker join` on a machine without a running init system (this
// container): it verifies the master, registers, shows the facts, prepares
// the directory, and runs the worker in the foreground; run again, it
// finds the worker registered; without --foreground it stops with a clear
// message; a wrong pin fails at the fingerprint step; uninstall --purge
// removes the directory.
func TestJoinForeground(t *testing.T) {
	t.Parallel()
	if _, err := service.DetectInit(); err == nil {
		t.Skip("an init system runs here: join would install a real service")
	}
	m := testenv.StartMaster(t, `
drover.probe("gtk", "echo 3.24.36")
drover.probe("nothing", "exit 3")
drover.builder(name = "b", steps = [drover.shell("true")])
`)
	dir := filepath.Join(t.TempDir(), "worker")
	url := "https://" + m.Workers
	args := []string{"worker", "join", url, "--token", m.EnrollToken, "--ca-sha256", m.Fingerprint,
		"--name", "joined", "--dir", dir, "--user", "", "--label", "joined=yes"}

	join := testenv.Start(t, "join", append(args, "--foreground")...)
	m.WaitFor(t, 60*time.Second, "worker joined connected", func() bool {
		ws, err := m.Client.Workers(context.Background())
		if err != nil {
			return false
		}
		for _, w := range ws {
			if w.Name == "joined" && w.Connected {
				return true
			}
		}
		select {
		case <-join.Done():
			t.Fatalf("join exited:\n%s", join.Output())
		default:
		}
		return false
	})
	out := join.Output()
	for _, want := range []string{
		"✓ master reachable at " + m.Workers,
		"✓ CA fingerprint verified (" + m.Fingerprint + ")",
		"✓ registered as joined",
		"✓ detected facts: os=",
		"✓ the master's probes (1 answered of 2): gtk=3.24.36",
		"joined=yes",
		"✓ running as the current user",
		"✓ worker directory " + dir,
		"no init system found (a container?): running the worker in the foreground",
		"✓ worker running in the foreground",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("join output lacks %q:\n%s", want, out)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("worker directory: %v, %v; want mode 0750", fi, err)
	}

	// Again, as a service: already registered (the token is not spent
	// twice), and no init system to install it under.
	out, code := testenv.Run(t, time.Minute, nil, args...)
	if code == 0 {
		t.Errorf("join without --foreground and without an init system succeeded:\n%s", out)
	}
	for _, want := range []string{
		"✓ already registered as joined",
		"✗ service: no init system found (a container?)",
		"hint: run `drover worker run --dir " + dir,
		"or rerun join with --foreground",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("second join output lacks %q:\n%s", want, out)
		}
	}

	// A wrong pin stops at the fingerprint, before anything is written.
	other := filepath.Join(t.TempDir(), "other")
	wrong := "sha256:" + strings.Repeat("0", 64)
	out, code = testenv.Run(t, time.Minute, nil, "worker", "join", url+"#"+wrong, "--token", m.EnrollToken,
		"--name", "impostor", "--dir", other, "--user", "", "--foreground")
	if code == 0 || !strings.Contains(out, "✓ master reachable") || !strings.Contains(out, "✗ CA fingerprint: ") ||
		!strings.Contains(out, "CA fingerprint mismatch") || strings.Contains(out, "registered as") {
		t.Errorf("join with a wrong pin: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(other, "worker.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("join with a wrong pin wrote state: %v", err)
	}

	// Ctrl-C stops the foreground worker, and join with it.
	join.Stop(30 * time.Second)
	if err := join.Wait(time.Second); err != nil {
		t.Errorf("join --foreground after SIGTERM: %v\n%s", err, join.Output())
	}

	for i := range 2 { // idempotent
		out, code = testenv.Run(t, time.Minute, nil, "worker", "uninstall", "--dir", dir, "--purge", "--user", "")
		if code != 0 || !strings.Contains(out, "no service to remove") {
			t.Errorf("uninstall #%d: exit %d\n%s", i+1, code, out)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("uninstall --purge left %s: %v", dir, err)
	}
}
