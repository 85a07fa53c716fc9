//go:build (darwin && (amd64 || arm64)) || (freebsd && (386 || amd64 || arm || arm64)) || (linux && (386 || amd64 || arm || arm64 || loong64 || ppc64le || riscv64 || s390x)) || (netbsd && amd64) || (openbsd && (amd64 || arm64)) || windows

package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-ci/drover/internal/agent"
	"github.com/drover-ci/drover/internal/pki"
)

// masterInitJSON runs `drover master init DIR --json` with more arguments
// and returns what it printed.
func masterInitJSON(t *testing.T, dir string, more ...string) map[string]string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(t.Context(), append([]string{"master", "init", dir, "--json"}, more...), &out, &errOut); err != nil {
		t.Fatalf("master init %s %q: %v\n%s", dir, more, err, errOut.String())
	}
	var res map[string]string
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("master init output: %v\n%s", err, out.String())
	}
	return res
}

// A second master of a site made with --ca-from has the first one's CA
// (so the same fingerprint), its own server certificate, and a copy of
// the first one's config; a worker pinned to the first master's
// fingerprint verifies the second.
func TestMasterInitCAFrom(t *testing.T) {
	first := filepath.Join(t.TempDir(), "first")
	second := filepath.Join(t.TempDir(), "second")
	if err := os.MkdirAll(filepath.Join(first, "lib"), 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"master.star":    "load(\"lib/steps.star\", \"steps\")\ndrover.builder(name = \"b\", steps = steps)\n",
		"lib/steps.star": "steps = [drover.shell(\"true\")]\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(first, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r1 := masterInitJSON(t, first)
	r2 := masterInitJSON(t, second, "--ca-from", first, "--host", "ci2.example.org")
	if r2["ca_sha256"] == "" || r2["ca_sha256"] != r1["ca_sha256"] {
		t.Fatalf("second master's CA %q, want the first's %q", r2["ca_sha256"], r1["ca_sha256"])
	}
	if r2["enroll_token"] == "" || r2["admin_token"] == "" {
		t.Errorf("second master init printed no tokens: %v", r2)
	}
	read := func(dir, name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if read(first, pki.CAKeyFile) != read(second, pki.CAKeyFile) {
		t.Error("the second master's CA key is not the first's")
	}
	if read(first, pki.ServerCertFile) == read(second, pki.ServerCertFile) {
		t.Error("the second master has no server certificate of its own")
	}
	for _, f := range []string{pki.CAKeyFile, pki.ServerKeyFile} {
		if fi, err := os.Stat(filepath.Join(second, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", f, fi, err)
		}
	}
	for name, text := range files {
		if got := read(second, name); got != text {
			t.Errorf("second master's %s = %q, want a copy of the first's", name, got)
		}
	}

	// Run again, as text: the worker command pins the same CA, and the
	// config is kept.
	if err := os.WriteFile(filepath.Join(second, "master.star"), []byte("drover.master(title = \"two\")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"master", "init", second, "--ca-from", first}, &out, &errOut); err != nil {
		t.Fatalf("master init again: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{"--ca-sha256 " + r1["ca_sha256"], "A master of the site of " + first, "config names no database"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("master init output lacks %q:\n%s", want, out.String())
		}
	}
	if got := read(second, "master.star"); !strings.Contains(got, "two") {
		t.Errorf("master init replaced the config: %q", got)
	}

	// A worker pinned to the first master's fingerprint verifies the
	// second master's certificate, by IP address and by name.
	cfg, fp, err := pki.ServerTLS(second, nil)
	if err != nil || fp != r1["ca_sha256"] {
		t.Fatalf("ServerTLS = %q, %v", fp, err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, host := range []string{"127.0.0.1", "localhost"} {
		got, err := agent.VerifyMaster(t.Context(), net.JoinHostPort(host, port), r1["ca_sha256"], t.TempDir())
		if err != nil || got != r1["ca_sha256"] {
			t.Errorf("VerifyMaster(%s) with the first master's pin = %q, %v", host, got, err)
		}
	}

	// A master directory with a CA of its own is not taken over.
	other := filepath.Join(t.TempDir(), "other")
	r3 := masterInitJSON(t, other)
	err = run(t.Context(), []string{"master", "init", other, "--ca-from", first}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "another CA") {
		t.Errorf("master init --ca-from over another CA = %v; want a refusal", err)
	}
	if again := masterInitJSON(t, other); again["ca_sha256"] != r3["ca_sha256"] {
		t.Errorf("the other master's CA changed from %s to %s", r3["ca_sha256"], again["ca_sha256"])
	}
}
