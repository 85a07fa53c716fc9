// Package deptest checks the import boundaries the design depends on:
// the root vocabulary imports nothing of ours, dispatch decides without
// I/O, the worker's agent is an island, the API and the web UI read
// through interfaces of their own, and the drover binary links no test
// code. A boundary that only a reviewer guards is crossed by accident.
package deptest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/drover-ci/drover"

// pkg is what `go list -json` says of a package.
type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// list runs `go list -json` on patterns, from the module root.
func list(t *testing.T, patterns ...string) map[string]pkg {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies")
	}
	cmd := exec.Command(gobin, append([]string{"list", "-json"}, patterns...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

func ours(path string) bool { return path == module || strings.HasPrefix(path, module+"/") }

func TestBoundaries(t *testing.T) {
	pkgs := list(t, "./...")
	get := func(rel string) pkg {
		path := module
		if rel != "" {
			path += "/" + rel
		}
		p, ok := pkgs[path]
		if !ok {
			t.Fatalf("no package %s", path)
		}
		return p
	}
	tests := []struct {
		name string
		pkg  string
		// deps checks every package linked (transitively); imports only
		// the package's own imports.
		deps      bool
		forbidden func(dep string) bool
	}{
		{"the root vocabulary imports nothing of ours", "", false, ours},
		{"dispatch decides without I/O", "internal/dispatch", false, func(d string) bool {
			switch d {
			case "os", "os/exec", "net", "net/http", "database/sql", "io/fs", "log", "log/slog":
				return true
			}
			return ours(d) && d != module
		}},
		{"the agent is an island", "internal/agent", true, func(d string) bool {
			for _, f := range []string{"store", "dispatch", "master", "api", "web", "workerhub", "logstore", "config"} {
				if d == module+"/internal/"+f || strings.HasPrefix(d, module+"/internal/"+f+"/") {
					return true
				}
			}
			return false
		}},
		{"gitcheckout is a leaf", "internal/gitcheckout", true, ours},
		{"the API reads through its own interfaces", "internal/api", false, func(d string) bool {
			return d == module+"/internal/store" || d == module+"/internal/master"
		}},
		{"the web UI reads through the API's interfaces", "internal/web", false, func(d string) bool {
			return d == module+"/internal/store" || d == module+"/internal/master"
		}},
		{"the drover binary links no test code", "cmd/drover", true, func(d string) bool {
			return d == "testing" || (ours(d) && strings.HasSuffix(d, "test")) // testenv, storetest, …
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := get(tt.pkg)
			deps := p.Imports
			if tt.deps {
				deps = p.Deps
			}
			for _, d := range deps {
				if tt.forbidden(d) {
					t.Errorf("%s links %s", p.ImportPath, d)
				}
			}
		})
	}
}
