package config_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/drover-ci/drover/internal/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// render is what a golden file holds: the Config as indented JSON (without
// Hash and Files, which depend on where the tree is checked out), or the
// error text.
func render(t *testing.T, c *config.Config, err error) string {
	t.Helper()
	if err != nil {
		return err.Error() + "\n"
	}
	c.Hash, c.Files = "", nil
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatalf("marshal config: %v", err)
	}
	return string(b) + "\n"
}

// TestGolden loads every testdata/*.star and compares the outcome with the
// .golden file beside it. Files named err_*.star must fail to load, the
// others must load.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.star"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.star files")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".star")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Load(file)
			wantErr := strings.HasPrefix(name, "err_")
			switch {
			case wantErr && err == nil:
				t.Errorf("Load(%s) succeeded, want an error", file)
			case !wantErr && err != nil:
				t.Errorf("Load(%s): %v", file, err)
			}
			if err != nil {
				checkErrorLines(t, err)
			}
			got := render(t, c, err)
			golden := strings.TrimSuffix(file, ".star") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Load(%s) differs from %s (run go test -update to accept):\n--- got\n%s--- want\n%s", file, golden, got, want)
			}
		})
	}
}

var positionRE = regexp.MustCompile(`^[^\s:][^:\n]*:[0-9]+(:[0-9]+)?: \S`)

// checkErrorLines asserts the contract of Load's errors: one problem per
// line, each starting with file:line.
func checkErrorLines(t *testing.T, err error) {
	t.Helper()
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if !positionRE.MatchString(line) {
			t.Errorf("error line without a file:line position: %q", line)
		}
	}
}

// FuzzLoadSource checks that no config text makes the loader panic, and
// that every error it gives has a position.
func FuzzLoadSource(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.star"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Add([]byte(config.SampleConfig("https://example.org/proj.git")))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := config.LoadSource(filepath.Join("testdata", "fuzz.star"), src)
		if err != nil {
			if c != nil {
				t.Errorf("LoadSource returned both a config and an error")
			}
			checkErrorLines(t, err)
			return
		}
		if len(c.Hash) != 64 || len(c.Files) == 0 {
			t.Errorf("loaded config has hash %q and files %q", c.Hash, c.Files)
		}
	})
}
