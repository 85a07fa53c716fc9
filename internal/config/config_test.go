package config_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/config"
)

// writeTree writes files (slash paths relative to a new temporary
// directory) and returns the directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// hashOf is the documented Hash: each file's length (8 bytes, big-endian)
// and contents, in load order.
func hashOf(contents ...string) string {
	h := sha256.New()
	for _, c := range contents {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(c)))
		h.Write(n[:])
		h.Write([]byte(c))
	}
	return hex.EncodeToString(h.Sum(nil))
}

const (
	treeMain = `load("lib/steps.star", "steps")
src = drover.git("https://example.org/proj.git", branches = ["main"])
drover.builder(name = "b", steps = [drover.checkout(src)] + steps)
drover.scheduler("main", source = src)
`
	treeSteps = `load("../shared.star", "make")
steps = [drover.shell(make + " test")]
`
	treeShared = `make = "gmake"
`
)

func TestLoadDirectoryAndFile(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"master.star":    treeMain,
		"lib/steps.star": treeSteps,
		"shared.star":    treeShared,
	})
	wantFiles := []string{
		filepath.Join(dir, "master.star"),
		filepath.Join(dir, "lib", "steps.star"),
		filepath.Join(dir, "shared.star"),
	}
	wantHash := hashOf(treeMain, treeSteps, treeShared)

	for _, path := range []string{dir, filepath.Join(dir, "master.star")} {
		c, err := config.Load(path)
		if err != nil {
			t.Fatalf("Load(%s): %v", path, err)
		}
		if !slices.Equal(c.Files, wantFiles) {
			t.Errorf("Load(%s).Files = %q, want %q", path, c.Files, wantFiles)
		}
		if c.Hash != wantHash {
			t.Errorf("Load(%s).Hash = %s, want %s", path, c.Hash, wantHash)
		}
		if len(c.Builders) != 1 || len(c.Builders[0].Steps) != 2 {
			t.Fatalf("Load(%s).Builders = %+v, want one builder with two steps", path, c.Builders)
		}
		if got := c.Builders[0].Steps[1]; got.Name != "gmake" || got.Pos != "lib/steps.star:2" {
			t.Errorf("loaded step = %q at %q, want gmake at lib/steps.star:2", got.Name, got.Pos)
		}
		if s := c.Schedulers[0]; s.Branch != "main" || s.Repository != "https://example.org/proj.git" {
			t.Errorf("scheduler = %+v, want branch main of the source", s)
		}
	}

	// Changing any loaded file changes the hash; the same files give the same one.
	if err := os.WriteFile(filepath.Join(dir, "shared.star"), []byte(`make = "make"`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hash == wantHash {
		t.Errorf("hash did not change when a loaded file did")
	}
}

func TestLoadErrorKinds(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"master.star": "drover.builder(name = \"a b\", steps = [])\n",
		"empty/x":     "",
	})
	tests := []struct {
		name  string
		path  string
		kind  drover.Kind
		count int // problems in the ErrorList, 0 when there is none
	}{
		{"missing file", filepath.Join(dir, "nope.star"), drover.NotFound, 0},
		{"directory without master.star", filepath.Join(dir, "empty"), drover.NotFound, 0},
		{"invalid config", dir, drover.Invalid, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Load(tt.path)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want an error", tt.path, c)
			}
			if k := drover.KindOf(err); k != tt.kind {
				t.Errorf("KindOf(%v) = %v, want %v", err, k, tt.kind)
			}
			var list config.ErrorList
			if got := errors.As(err, &list); got != (tt.count > 0) || len(list) != tt.count {
				t.Errorf("errors.As(ErrorList) = %v with %d errors, want %d errors: %v", got, len(list), tt.count, err)
			}
			for _, e := range list {
				if !strings.HasPrefix(e.Pos, "master.star:1:") {
					t.Errorf("error at %q, want master.star:1:col", e.Pos)
				}
			}
		})
	}
}

// TestLoadSymlinkEscape checks that a symbolic link inside the config
// directory cannot be used to read a file outside it.
func TestLoadSymlinkEscape(t *testing.T) {
	outside := writeTree(t, map[string]string{"secret.star": "x = 1\n"})
	dir := writeTree(t, map[string]string{
		"master.star": `load("lib/secret.star", "x")` + "\n",
	})
	if err := os.Mkdir(filepath.Join(dir, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.star"), filepath.Join(dir, "lib", "secret.star")); err != nil {
		t.Skipf("cannot make symlinks here: %v", err)
	}
	_, err := config.Load(dir)
	if err == nil {
		t.Fatal("Load followed a symlink out of the config directory")
	}
	if !strings.HasPrefix(err.Error(), "master.star:1:1: cannot load lib/secret.star:") {
		t.Errorf("error = %q, want it at the load statement", err)
	}

	// A link that stays inside the directory is fine.
	if err := os.WriteFile(filepath.Join(dir, "real.star"), []byte("x = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..", "real.star"), filepath.Join(dir, "lib", "inside.star")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "master.star"), []byte(`load("lib/inside.star", "x")`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(dir); err != nil {
		t.Errorf("Load with a symlink inside the directory: %v", err)
	}
}

func TestSampleConfig(t *testing.T) {
	tests := []struct {
		url, source string
	}{
		{"https://example.org/proj.git", "proj"},
		{"git@github.com:example/widget.git", "widget"},
		{"/srv/git/runtime", "runtime"},
		{"file:///srv/git/quoted\"name\\.git", ""}, // loads only if quoted properly; the name is then invalid
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			src := config.SampleConfig(tt.url)
			c, err := config.LoadSource(filepath.Join(t.TempDir(), "master.star"), []byte(src))
			if tt.source == "" {
				// The URL reached the loader intact (it was not a
				// syntax error), and the loader refused its name.
				if err == nil || !strings.Contains(err.Error(), "cannot make a source name") {
					t.Errorf("LoadSource(sample) = %v, want an error about the source name", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("sample config does not load: %v\n%s", err, src)
			}
			if len(c.Sources) != 1 || c.Sources[0].URL != tt.url || c.Sources[0].Name != tt.source {
				t.Errorf("sources = %+v, want one named %s at %s", c.Sources, tt.source, tt.url)
			}
			if len(c.Builders) < 1 {
				t.Fatalf("sample has no builders")
			}
			for _, b := range c.Builders {
				var names []string
				for _, s := range b.Steps {
					names = append(names, s.Name)
				}
				if !slices.Equal(names, []string{"checkout", "compile", "test"}) {
					t.Errorf("builder %s steps = %q, want checkout, compile, test", b.Name, names)
				}
			}
			if len(c.Schedulers) != 1 || c.Schedulers[0].Branch != "main" || len(c.Schedulers[0].Builders) != len(c.Builders) {
				t.Errorf("schedulers = %+v, want one on main for every builder", c.Schedulers)
			}
		})
	}
}

// TestStepsNotShared checks that a step value put in two builders gives
// each its own copy, so the master can never change one builder through
// another.
func TestStepsNotShared(t *testing.T) {
	src := `
src = drover.git("https://example.org/p.git")
common = [drover.checkout(src), drover.shell("make", env = {"A": "1"}, extract = {"v": "v(.*)"})]
drover.builder(name = "a", steps = common)
drover.builder(name = "b", steps = common)
`
	c, err := config.LoadSource("master.star", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Builders[0].Steps, c.Builders[1].Steps
	a[1].Env["A"] = "changed"
	a[1].Extract["v"] = "changed"
	a[1].Command[0] = "changed"
	a[0].Source.URL = "changed"
	if b[1].Env["A"] != "1" || b[1].Extract["v"] != "v(.*)" || b[1].Command[0] != "make" || b[0].Source.URL != "https://example.org/p.git" {
		t.Errorf("builders share step data: %+v", b)
	}
	if c.Sources[0].URL != "https://example.org/p.git" {
		t.Errorf("a step shares its source with Config.Sources")
	}
}

// TestDeterministic loads the same config twice and expects the same
// result, byte for byte: reload compares configs, and a config that changed
// on its own would restart schedulers for nothing.
func TestDeterministic(t *testing.T) {
	var outs []string
	for range 2 {
		c, err := config.Load(filepath.Join("testdata", "matrix.star"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(b))
	}
	if outs[0] != outs[1] {
		t.Errorf("two loads of the same config differ")
	}
}

func TestDefaults(t *testing.T) {
	c, err := config.LoadSource("master.star", []byte(`
drover.builder(name = "b", steps = [drover.shell("make")])
drover.probe("p", "true")
`))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Master{
		Title:       "Drover",
		HTTP:        ":8010",
		Workers:     ":9989",
		LogMaxBytes: 64 << 20,
		LogHorizon:  720 * time.Hour,
		WorkerGrace: 2 * time.Minute,
		MaxRetries:  3,
		PublicReads: true,

		ArtifactHorizon: 720 * time.Hour,
		SiteTimeout:     15 * time.Second,
	}
	if c.Master != want {
		t.Errorf("Master = %+v, want %+v", c.Master, want)
	}
	step := c.Builders[0].Steps[0]
	if !step.HaltOnFailure || !step.FlunkOnFailure || step.WarnOnFailure || step.AlwaysRun || step.KillGrace != 10*time.Second || !step.Shell {
		t.Errorf("shell step defaults = %+v", step)
	}
	if c.Probes[0].Timeout != 30*time.Second {
		t.Errorf("probe timeout = %v, want 30s", c.Probes[0].Timeout)
	}
}

// A worker's downtime windows without a zone of their own are read in the
// worker's timezone, else the master's, else UTC, wherever drover.master
// is called; a window's own zone wins over all of them.
func TestWorkerDowntimeZones(t *testing.T) {
	dir := writeTree(t, map[string]string{"master.star": `
drover.worker("own", downtime = ["Wed 08:00-10:00"], timezone = "Asia/Tokyo")
drover.worker("master", downtime = ["Wed 08:00-10:00"])
drover.worker("inline", downtime = ["Wed 08:00-10:00 America/New_York"])
drover.worker("none")
drover.master(timezone = "Europe/Berlin")
`})
	c, err := config.Load(filepath.Join(dir, "master.star"))
	if err != nil {
		t.Fatal(err)
	}
	// Wednesday 2026-06-03 at 08:30 in each zone.
	for name, zone := range map[string]string{"own": "Asia/Tokyo", "master": "Europe/Berlin", "inline": "America/New_York"} {
		set := c.WorkerDowntime(name)
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Date(2026, 6, 3, 8, 30, 0, 0, loc)
		if !set.Contains(at) || set.Contains(at.Add(-2*time.Hour)) {
			t.Errorf("%s: downtime %s is not read in %s", name, set, zone)
		}
	}
	if set := c.WorkerDowntime("none"); !set.IsZero() {
		t.Errorf("a worker without downtime has %s", set)
	}
	if set := c.WorkerDowntime("unknown"); !set.IsZero() {
		t.Errorf("an unknown worker has %s", set)
	}

	// Without drover.master(timezone = ...), UTC.
	dir = writeTree(t, map[string]string{"master.star": `drover.worker("w", downtime = ["Wed 08:00-10:00"])`})
	if c, err = config.Load(filepath.Join(dir, "master.star")); err != nil {
		t.Fatal(err)
	}
	if set := c.WorkerDowntime("w"); !set.Contains(time.Date(2026, 6, 3, 8, 30, 0, 0, time.UTC)) || set.Zone != time.UTC {
		t.Errorf("downtime %s in %v, want UTC", set, set.Zone)
	}
}
