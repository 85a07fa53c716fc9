package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

// deadAddr is a loopback address where nothing listens: dialling it is
// refused at once.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// slowBackoff gives a the production backoffs, or longer: a test that
// still sees a quick reconnect shows that no backoff was waited.
func slowBackoff(a *Agent) {
	a.backoffMin, a.backoffMax = 30*time.Second, time.Minute
}

func TestNewSeveralMasters(t *testing.T) {
	tests := []struct {
		name    string
		masters []string
		plain   bool
		want    string // error substring; "" for success
	}{
		{"two loopback masters in plaintext", []string{"127.0.0.1:1", "localhost:2"}, true, ""},
		{"plaintext with one remote master", []string{"127.0.0.1:1", "ci.example.org:9989"}, true, "plaintext connection to ci.example.org refused"},
		{"one bad address", []string{"ci.example.org:9989", "nohost"}, false, `master address "nohost": want host:port`},
		{"a comma inside an address", []string{"a:1,b:2"}, false, "want host:port"},
		{"empty entries only", []string{" ", ""}, true, "no master address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Masters: tt.masters, Name: "w", Token: testEnrollToken, Plaintext: tt.plain, Dir: t.TempDir()}
			if !tt.plain {
				cfg.CAFingerprint = "sha256:" + strings.Repeat("ab", 32)
			}
			_, err := New(cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || drover.KindOf(err) != drover.Invalid || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v; want an Invalid error containing %q", err, tt.want)
			}
		})
	}
	t.Run("spaces and repeats are dropped", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := New(Config{Masters: []string{" 127.0.0.1:1", "127.0.0.1:2", "", "127.0.0.1:1"}, Name: "w", Token: testWorkerToken, Plaintext: true, Dir: dir}); err != nil {
			t.Fatal(err)
		}
		st, err := loadState(dir)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"127.0.0.1:1", "127.0.0.1:2"}; !slices.Equal(st.Masters, want) {
			t.Errorf("stored masters = %q, want %q", st.Masters, want)
		}
	})
}

// A directory written by a drover that knew only one master still runs,
// and the list that replaces it is stored with the first master also in
// the old field.
func TestStateFileWithOneMaster(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	old := fmt.Sprintf(`{"name": "w1", "master": %q, "token": %q}`, m.addr, testWorkerToken)
	if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Dir: dir, Plaintext: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New from an old state file: %v", err)
	}
	if !slices.Equal(a.masters, []string{m.addr}) {
		t.Errorf("masters = %q, want [%s]", a.masters, m.addr)
	}
	cancel, done := runAgent(t, a)
	if s := m.Session(t); s.hello.GetName() != "w1" || s.hello.GetToken() != testWorkerToken {
		t.Errorf("hello = %v", s.hello)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	other := deadAddr(t)
	if _, err := New(Config{Dir: dir, Masters: []string{other, m.addr}, Plaintext: true}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Master  string   `json:"master"`
		Masters []string `json:"masters"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Master != other || !slices.Equal(raw.Masters, []string{other, m.addr}) {
		t.Errorf("worker.json master = %q, masters = %q; want %s and [%s %s]", raw.Master, raw.Masters, other, other, m.addr)
	}
}

func TestFirstMasterDown(t *testing.T) {
	m := startFakeMaster(t, false)
	a := newTestAgent(t, m, t.TempDir(), func(c *Config) { c.Masters = []string{deadAddr(t), m.addr} })
	slowBackoff(a)
	runAgent(t, a)
	// m.Session waits 10 s: a backoff after the refused first master
	// would most likely take longer.
	if s := m.Session(t); s.hello.GetName() != "w1" {
		t.Errorf("hello = %v", s.hello)
	}
}

func TestEnrollTriesEachMaster(t *testing.T) {
	ms := startFakeSite(t, 1)
	dir := t.TempDir()
	e, err := Enroll(t.Context(), Config{Masters: []string{deadAddr(t), ms[0].addr}, Name: "w1", Token: testEnrollToken,
		CAFingerprint: ms[0].fingerprint(), Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if e.Name != "w1" || e.Already || len(e.Masters) != 2 {
		t.Errorf("enrollment = %+v", e)
	}
	// Joining again with one more master of the site stores the new list
	// and does not enroll again.
	more := []string{ms[0].addr, deadAddr(t)}
	e, err = Enroll(t.Context(), Config{Masters: more, Name: "w1", Token: testEnrollToken, CAFingerprint: ms[0].fingerprint(), Dir: dir})
	if err != nil || !e.Already || !slices.Equal(e.Masters, more) {
		t.Fatalf("second Enroll = %+v, %v; want already enrolled with %q", e, err, more)
	}
	if st, _ := loadState(dir); !slices.Equal(st.Masters, more) {
		t.Errorf("stored masters = %q, want %q", st.Masters, more)
	}
	// A list that names none of the site's masters is another site.
	_, err = Enroll(t.Context(), Config{Masters: []string{deadAddr(t)}, Dir: dir})
	if drover.KindOf(err) != drover.Conflict {
		t.Errorf("Enroll with other masters = %v; want a conflict", err)
	}
	ms[0].mu.Lock()
	defer ms[0].mu.Unlock()
	if len(ms[0].enrolls) != 1 {
		t.Errorf("enrolled %d times, want once", len(ms[0].enrolls))
	}
}

// A master whose certificate the pinned CA does not vouch for is skipped,
// not fatal, while another master of the site is trusted.
func TestUntrustedMasterIsSkipped(t *testing.T) {
	stranger := startFakeMaster(t, true) // its own CA
	site := startFakeSite(t, 1)
	a := newTestAgent(t, site[0], t.TempDir(), func(c *Config) { c.Masters = []string{stranger.addr, site[0].addr} })
	_, done := runAgent(t, a)
	site[0].Session(t)
	select {
	case err := <-done:
		t.Fatalf("Run returned %v", err)
	default:
	}
}

func TestRotation(t *testing.T) {
	const spread = time.Second
	// Backoffs of whole hours tell the waits apart from the spread.
	backoff := func(rounds int) time.Duration { return time.Duration(rounds+1) * time.Hour }
	refused := sessionResult{}
	broke := sessionResult{connected: true, up: time.Second}
	lasted := sessionResult{connected: true, up: 2 * backoffReset}
	type step struct {
		res      sessionResult
		next     int
		min, max time.Duration
	}
	soon := func(res sessionResult, next int) step {
		return step{res, next, time.Millisecond, spread + time.Millisecond}
	}
	now := func(res sessionResult, next int) step { return step{res, next, 0, 0} }
	wait := func(res sessionResult, next int, d time.Duration) step { return step{res, next, d, d} }
	tests := []struct {
		name  string
		n     int
		steps []step
	}{
		{"one master", 1, []step{
			wait(refused, 0, time.Hour),
			wait(broke, 0, 2*time.Hour), // accepted, then dropped at once: still backed off from
			wait(refused, 0, 3*time.Hour),
			wait(lasted, 0, time.Hour), // a stream that lasted starts the backoff again
		}},
		{"three masters", 3, []step{
			now(refused, 1),             // the first is down: the second at once
			soon(broke, 2),              // its stream broke: the third within the spread
			wait(refused, 1, time.Hour), // a whole round failed: back off, then the last that held a stream
			now(refused, 2),
			now(refused, 0),
			wait(refused, 1, 2*time.Hour), // another failed round: longer
			soon(lasted, 2),               // a stream that lasted: a fresh start, and the next soon
			now(refused, 0),
			wait(refused, 1, 1*time.Hour), // the backoff started again
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rotation{n: tt.n, backoff: backoff, spread: spread}
			for i, s := range tt.steps {
				from := r.next
				d := r.ended(s.res)
				if r.next != s.next || d < s.min || d > s.max {
					t.Fatalf("step %d (%+v from master %d): next %d after %s; want %d after [%s, %s]", i, s.res, from, r.next, d, s.next, s.min, s.max)
				}
			}
		})
	}
}
