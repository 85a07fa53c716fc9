package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

func TestNewValidation(t *testing.T) {
	okPin := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no dir", Config{Masters: []string{"127.0.0.1:9989"}, Name: "w", Token: testEnrollToken, Plaintext: true}, "no worker directory"},
		{"no master", Config{Name: "w", Token: testEnrollToken, Plaintext: true}, "no master address"},
		{"bad master", Config{Masters: []string{"nohost"}, Name: "w", Token: testEnrollToken, Plaintext: true}, "want host:port"},
		{"plaintext to a remote host", Config{Masters: []string{"ci.example.org:9989"}, Name: "w", Token: testEnrollToken, Plaintext: true}, "plaintext connection to ci.example.org refused"},
		{"plaintext to a private address", Config{Masters: []string{"10.0.0.1:9989"}, Name: "w", Token: testEnrollToken, Plaintext: true}, "plaintext connection"},
		{"no token", Config{Masters: []string{"127.0.0.1:9989"}, Name: "w", Plaintext: true}, "no token"},
		{"bad token", Config{Masters: []string{"127.0.0.1:9989"}, Name: "w", Token: "hunter2", Plaintext: true}, "token must start with"},
		{"no name", Config{Masters: []string{"127.0.0.1:9989"}, Token: testEnrollToken, Plaintext: true}, "no worker name"},
		{"no pin", Config{Masters: []string{"127.0.0.1:9989"}, Name: "w", Token: testEnrollToken}, "no CA fingerprint"},
		{"bad pin", Config{Masters: []string{"127.0.0.1:9989"}, Name: "w", Token: testEnrollToken, CAFingerprint: "md5:abc"}, "must start with"},
		{"short pin", Config{Masters: []string{"127.0.0.1:9989"}, Name: "w", Token: testEnrollToken, CAFingerprint: "sha256:abc"}, "64 hex digits"},
		{"negative max builds", Config{Masters: []string{"127.0.0.1:9989"}, Name: "w", Token: testEnrollToken, CAFingerprint: okPin, MaxBuilds: -1}, "max builds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name != "no dir" {
				tt.cfg.Dir = t.TempDir()
			}
			_, err := New(tt.cfg)
			if err == nil {
				t.Fatalf("New succeeded; want an error containing %q", tt.want)
			}
			if drover.KindOf(err) != drover.Invalid {
				t.Errorf("kind = %v, want invalid (err %v)", drover.KindOf(err), err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to contain %q", err, tt.want)
			}
		})
	}

	t.Run("plaintext to loopback", func(t *testing.T) {
		for _, host := range []string{"127.0.0.1:1", "localhost:1", "[::1]:1"} {
			if _, err := New(Config{Masters: []string{host}, Name: "w", Token: testEnrollToken, Plaintext: true, Dir: t.TempDir()}); err != nil {
				t.Errorf("New(%s): %v", host, err)
			}
		}
	})
	t.Run("dir belongs to another worker", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := New(Config{Masters: []string{"127.0.0.1:1"}, Name: "w1", Token: testWorkerToken, Plaintext: true, Dir: dir}); err != nil {
			t.Fatal(err)
		}
		_, err := New(Config{Masters: []string{"127.0.0.1:1"}, Name: "w2", Plaintext: true, Dir: dir})
		if drover.KindOf(err) != drover.Invalid {
			t.Errorf("err = %v, want invalid", err)
		}
	})
}

func TestEnrollThenReconnectWithWorkerToken(t *testing.T) {
	m := startFakeMaster(t, true)
	dir := t.TempDir()
	a := newTestAgent(t, m, dir, func(c *Config) { c.Token = testEnrollToken })
	cancel, done := runAgent(t, a)
	s := m.Session(t)
	if got := s.hello.GetToken(); got != testWorkerToken {
		t.Errorf("hello token = %q, want the enrolled worker token", got)
	}
	if s.hello.GetName() != "w1" || s.hello.GetAvailability() != "eager" || s.hello.GetProtocolVersion() != workerproto.ProtocolVersion || s.hello.GetMaxBuilds() != 1 {
		t.Errorf("hello = %v", s.hello)
	}
	if got := s.hello.GetFacts()["drover_version"].GetValues(); len(got) != 1 || got[0] != "1.2.3-test" {
		t.Errorf("drover_version fact = %v", got)
	}
	if s.hello.GetLabels()["gpu"] != "no" {
		t.Errorf("labels = %v", s.hello.GetLabels())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	m.mu.Lock()
	if len(m.enrolls) != 1 || m.enrolls[0].GetName() != "w1" || m.enrolls[0].GetProgramVersion() != "1.2.3-test" {
		t.Errorf("enrolls = %v", m.enrolls)
	}
	m.mu.Unlock()

	// The state file holds the worker's own token, privately, and never the
	// enrollment token; the CA is pinned.
	path := filepath.Join(dir, "worker.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("worker.json mode = %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), testEnrollToken) {
		t.Error("worker.json holds the enrollment token")
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	want := state{Name: "w1", Masters: []string{m.addr}, Master: m.addr, Token: testWorkerToken, CAFingerprint: m.fingerprint()}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("state = %+v, want %+v", st, want)
	}
	ca, err := loadCA(dir)
	if err != nil || ca == nil || !ca.Equal(m.ca) {
		t.Fatalf("ca.pem = %v, %v; want the master's CA", ca, err)
	}

	// A second run needs neither token nor pin, and does not enroll again.
	a2, err := New(Config{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New from state: %v", err)
	}
	runAgent(t, a2)
	s2 := m.Session(t)
	if s2.hello.GetToken() != testWorkerToken || s2.hello.GetName() != "w1" {
		t.Errorf("second hello = %v", s2.hello)
	}
	m.mu.Lock()
	if len(m.enrolls) != 1 {
		t.Errorf("enrolled %d times, want once", len(m.enrolls))
	}
	m.mu.Unlock()
}

func TestTLSPinning(t *testing.T) {
	m := startFakeMaster(t, true)
	_, port, _ := strings.Cut(m.addr, ":")
	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run("right pin via "+host, func(t *testing.T) {
			dir := t.TempDir()
			a := newTestAgent(t, m, dir, func(c *Config) { c.Masters = []string{host + ":" + port} })
			runAgent(t, a)
			m.Session(t)
			if ca, err := loadCA(dir); err != nil || ca == nil || !ca.Equal(m.ca) {
				t.Errorf("ca.pem = %v, %v; want the master's CA", ca, err)
			}
		})
	}
	t.Run("wrong pin", func(t *testing.T) {
		dir := t.TempDir()
		other, _ := testCertificates(t)
		a := newTestAgent(t, m, dir, func(c *Config) { c.CAFingerprint = fingerprint(other.Raw) })
		_, done := runAgent(t, a)
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "fingerprint") {
				t.Fatalf("Run = %v, want an error about the fingerprint", err)
			}
			if drover.KindOf(err) != drover.Unauthorized {
				t.Errorf("kind = %v, want unauthorized", drover.KindOf(err))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run kept retrying with a wrong pin")
		}
		if _, err := os.Stat(filepath.Join(dir, "ca.pem")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ca.pem written after a pin mismatch: %v", err)
		}
	})
	t.Run("stored CA does not match the master", func(t *testing.T) {
		dir := t.TempDir()
		other, _ := testCertificates(t)
		if err := saveCA(dir, other); err != nil {
			t.Fatal(err)
		}
		if err := saveState(dir, state{Name: "w1", Masters: []string{m.addr}, Token: testWorkerToken, CAFingerprint: fingerprint(other.Raw)}); err != nil {
			t.Fatal(err)
		}
		a, err := New(Config{Dir: dir, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		_, done := runAgent(t, a)
		select {
		case err := <-done:
			if drover.KindOf(err) != drover.Unauthorized || !strings.Contains(err.Error(), "ca.pem") {
				t.Fatalf("Run = %v, want an unauthorized error naming ca.pem", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run kept retrying against an unknown CA")
		}
	})
}

func TestRefusedTokenIsPermanent(t *testing.T) {
	m := startFakeMaster(t, false)
	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"revoked worker token", "drover_worker_revoked", "master refused this worker"},
		{"bad enrollment token", "drover_enroll_expired", "enrollment refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAgent(t, m, t.TempDir(), func(c *Config) { c.Token = tt.token })
			_, done := runAgent(t, a)
			select {
			case err := <-done:
				if drover.KindOf(err) != drover.Unauthorized || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Run = %v, want unauthorized %q", err, tt.want)
				}
				if strings.Contains(err.Error(), tt.token) {
					t.Errorf("error shows the token: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run kept retrying with a refused token")
			}
		})
	}
}

func TestReconnectsAfterStreamDrop(t *testing.T) {
	m := startFakeMaster(t, false)
	a := newTestAgent(t, m, t.TempDir(), nil)
	runAgent(t, a)
	s := m.Session(t)
	s.Drop()
	m.Session(t)
}

func TestRunWhileNoMaster(t *testing.T) {
	a, err := New(Config{Masters: []string{"127.0.0.1:1"}, Name: "w", Token: testWorkerToken, Plaintext: true, Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("Run = %v, want nil on cancel", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Run took %s after its context ended", d)
	}
}
