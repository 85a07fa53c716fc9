package api

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

func TestClientQueue(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()

	empty, err := f.reader.Queue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if empty == nil || len(empty) != 0 {
		t.Errorf("Queue of an empty master = %#v, want an empty list", empty)
	}
	// The empty list crosses the wire as [], not null.
	if status, _, body := f.send(t, "GET", "/api/v1/queue", "Bearer "+readerToken, ""); status != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("GET /api/v1/queue = %d %q, want 200 []", status, body)
	}

	low, err := f.op.Force(ctx, "docs", ForceRequest{Reason: "low"})
	if err != nil {
		t.Fatal(err)
	}
	high, err := f.op.Force(ctx, "linux-gcc", ForceRequest{Priority: 10, Branch: "release", Reason: "high"})
	if err != nil {
		t.Fatal(err)
	}
	f.b.setWaiting(high.ID, "lock vm held by build 17")

	q, err := f.reader.Queue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 {
		t.Fatalf("Queue = %+v, want 2 entries", q)
	}
	if q[0].Request.ID != high.ID || q[1].Request.ID != low.ID {
		t.Errorf("Queue order = %d, %d; want %d (priority 10) then %d", q[0].Request.ID, q[1].Request.ID, high.ID, low.ID)
	}
	if q[0].Waiting != "lock vm held by build 17" || q[0].Request.Source.Branch != "release" || q[0].Request.Priority != 10 {
		t.Errorf("first entry = %+v", q[0])
	}
	if q[1].Waiting != "waiting for a worker" {
		t.Errorf("second entry waits for %q", q[1].Waiting)
	}

	// A master that cannot explain the queue says so with 503, which the
	// client maps back to Unavailable.
	f.b.mu.Lock()
	f.b.queueErr = drover.Errorf(drover.Unavailable, "the dispatcher is starting")
	f.b.mu.Unlock()
	if _, err := f.reader.Queue(ctx); drover.KindOf(err) != drover.Unavailable || !strings.Contains(err.Error(), "the dispatcher is starting") {
		t.Errorf("Queue with a failing backend: %v, want Unavailable with the backend's message", err)
	}

	if _, err := f.anon.Queue(ctx); drover.KindOf(err) != drover.Unauthorized {
		t.Errorf("anonymous Queue without public reads: %v, want Unauthorized", err)
	}
}

func TestClientLocks(t *testing.T) {
	f := newFixture(t, Options{PublicReads: true})
	ctx := context.Background()

	if status, _, body := f.send(t, "GET", "/api/v1/locks", "", ""); status != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("GET /api/v1/locks with no locks = %d %q, want 200 []", status, body)
	}

	since := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.b.setLocks([]drover.LockState{
		{Name: "vm", Scope: drover.LockMaster, Max: 2,
			Holders: []drover.LockHolder{{BuildID: 12, Builder: "linux-gcc", Number: 3, Step: -1, Exclusive: true, Since: since}},
			Waiters: []drover.LockHolder{{RequestID: 40, Builder: "docs", Step: -1, Since: since.Add(time.Minute)}}},
		{Name: "cpu", Scope: drover.LockWorker, Worker: "deb1", Max: 4}, // declared, unused
	})
	ls, err := f.anon.Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 {
		t.Fatalf("Locks = %+v, want 2", ls)
	}
	vm := ls[0]
	if vm.Name != "vm" || vm.Scope != drover.LockMaster || vm.Max != 2 || len(vm.Holders) != 1 || len(vm.Waiters) != 1 {
		t.Errorf("vm = %+v", vm)
	}
	if h := vm.Holders[0]; h.BuildID != 12 || !h.Exclusive || h.Step != -1 || !h.Since.Equal(since) {
		t.Errorf("vm holder = %+v", h)
	}
	if w := vm.Waiters[0]; w.RequestID != 40 || w.Builder != "docs" {
		t.Errorf("vm waiter = %+v", w)
	}
	if cpu := ls[1]; cpu.Worker != "deb1" || cpu.Holders == nil || cpu.Waiters == nil {
		t.Errorf("cpu = %#v, want worker deb1 and empty (not nil) holders and waiters", cpu)
	}
	if _, _, body := f.send(t, "GET", "/api/v1/locks", "", ""); !strings.Contains(body, `"holders":[]`) {
		t.Errorf("an unused lock's holders should encode as []: %s", body)
	}
}

func TestClientSetAvailability(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	f.addWorker(t, "deb1", nil)

	// An operator's override wins over the worker's own setting and
	// records who set it by the token's public id.
	w, err := f.op.SetAvailability(ctx, "deb1", "draining", "  disk replaced tomorrow ")
	if err != nil {
		t.Fatal(err)
	}
	if w.Override == nil {
		t.Fatalf("SetAvailability returned %+v, want an override", w)
	}
	a, reason, by := w.Effective()
	if a != drover.Draining || reason != "disk replaced tomorrow" || by != "operator 0e0000000002" {
		t.Errorf("effective availability = %q %q %q, want draining, the trimmed reason, operator 0e0000000002", a, reason, by)
	}
	if w.Availability != drover.Eager {
		t.Errorf("the worker's own availability changed to %q", w.Availability)
	}
	stored, err := f.st.GetWorker(ctx, "deb1")
	if err != nil {
		t.Fatal(err)
	}
	if stored.Override == nil || stored.Override.Availability != drover.Draining || stored.Override.At.IsZero() {
		t.Errorf("stored override = %+v", stored.Override)
	}
	if strings.Contains(f.log.String(), "operator-secret") {
		t.Errorf("the token's secret reached the log:\n%s", f.log.String())
	}

	// Admin may do it too; each state word is accepted.
	for _, s := range []string{"eager", "reluctant", "offline"} {
		w, err := f.admin.SetAvailability(ctx, "deb1", s, "")
		if err != nil {
			t.Fatalf("SetAvailability %s: %v", s, err)
		}
		if a, _, by := w.Effective(); string(a) != s || by != "operator ad0000000001" {
			t.Errorf("after %s: effective %q by %q", s, a, by)
		}
	}

	// "auto" clears the override: the worker's own applies again.
	for _, clear := range []string{"auto", ""} {
		if _, err := f.op.SetAvailability(ctx, "deb1", "offline", "x"); err != nil {
			t.Fatal(err)
		}
		w, err = f.op.SetAvailability(ctx, "deb1", clear, "")
		if err != nil {
			t.Fatalf("SetAvailability %q: %v", clear, err)
		}
		if a, _, by := w.Effective(); w.Override != nil || a != drover.Eager || by != "worker" {
			t.Errorf("after %q: override %+v, effective %q by %q; want the worker's own eager", clear, w.Override, a, by)
		}
	}
}

func TestSetAvailabilityErrors(t *testing.T) {
	f := newFixture(t, Options{PublicReads: true})
	f.addWorker(t, "deb1", nil)
	const path = "/api/v1/workers/deb1/availability"
	tests := []struct {
		name   string
		path   string
		auth   string
		body   string
		status int
		msg    string
	}{
		{"anonymous", path, "", `{"availability":"offline"}`, 401, "needs an API token with role operator"},
		{"read role", path, "Bearer " + readerToken, `{"availability":"offline"}`, 403, "role read may not do this"},
		{"bad state", path, "Bearer " + operatorToken, `{"availability":"asleep"}`, 400, `unknown availability "asleep"`},
		{"wrong type", path, "Bearer " + operatorToken, `{"availability":3}`, 400, `field "availability": want a string`},
		{"unknown field", path, "Bearer " + operatorToken, `{"availabilty":"eager"}`, 400, `unknown field "availabilty"`},
		{"empty body", path, "Bearer " + operatorToken, ``, 400, "request body is empty"},
		{"long reason", path, "Bearer " + operatorToken, fmt.Sprintf(`{"availability":"offline","reason":%q}`, strings.Repeat("x", 501)), 400, "at most 500"},
		{"control characters", path, "Bearer " + operatorToken, `{"availability":"offline","reason":"a\nb"}`, 400, "one line of text"},
		{"unknown worker", "/api/v1/workers/nope/availability", "Bearer " + operatorToken, `{"availability":"offline"}`, 404, "nope"},
		{"GET", path, "Bearer " + operatorToken, "", 405, "method GET not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := "POST"
			if tt.name == "GET" {
				method = "GET"
			}
			status, _, body := f.send(t, method, tt.path, tt.auth, tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if msg := errorMessage(t, body); !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q, want it to contain %q", msg, tt.msg)
			}
		})
	}
	// None of the refused calls changed anything.
	w, err := f.st.GetWorker(context.Background(), "deb1")
	if err != nil {
		t.Fatal(err)
	}
	if w.Override != nil {
		t.Errorf("a refused call set an override: %+v", w.Override)
	}
	// Through the client, the read role gets Unauthorized and a bad state
	// Invalid.
	if _, err := f.reader.SetAvailability(context.Background(), "deb1", "offline", ""); drover.KindOf(err) != drover.Unauthorized {
		t.Errorf("reader: %v, want Unauthorized", err)
	}
	if _, err := f.op.SetAvailability(context.Background(), "deb1", "sleepy", ""); drover.KindOf(err) != drover.Invalid {
		t.Errorf("bad state: %v, want Invalid", err)
	}
}
