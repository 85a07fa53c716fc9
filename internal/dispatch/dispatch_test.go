package dispatch

import (
	"reflect"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

func mustReq(t *testing.T, fact, c string) drover.Requirement {
	t.Helper()
	r, err := drover.ParseRequirement(fact, c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	linux := drover.Facts{"os": {"linux", "debian"}, "gcc": {"12.2.0"}}
	mac := drover.Facts{"os": {"darwin", "macos"}}
	builders := map[string]*drover.Builder{
		"lin":    {Name: "lin", Requires: []drover.Requirement{mustReq(t, "os", "linux")}},
		"gcc12":  {Name: "gcc12", Requires: []drover.Requirement{mustReq(t, "gcc", ">= 12")}},
		"mac":    {Name: "mac", Requires: []drover.Requirement{mustReq(t, "os", "macos")}},
		"capped": {Name: "capped", MaxBuilds: 1},
		"pinned": {Name: "pinned", Workers: []string{"w2"}},
	}
	tests := []struct {
		name     string
		requests []Request
		workers  []Worker
		running  map[string]int
		want     []Assignment
	}{
		{
			name:     "eligible worker gets the request",
			requests: []Request{{ID: 1, Builder: "lin", Submitted: t0}},
			workers:  []Worker{{Name: "m1", Facts: mac, Slots: 1}, {Name: "l1", Facts: linux, Slots: 1}},
			want:     []Assignment{{Request: 1, Worker: "l1"}},
		},
		{
			name:     "no eligible worker: stays queued",
			requests: []Request{{ID: 1, Builder: "mac", Submitted: t0}},
			workers:  []Worker{{Name: "l1", Facts: linux, Slots: 1}},
		},
		{
			name:     "version constraint",
			requests: []Request{{ID: 1, Builder: "gcc12", Submitted: t0}},
			workers:  []Worker{{Name: "m1", Facts: mac}, {Name: "l1", Facts: linux}},
			want:     []Assignment{{Request: 1, Worker: "l1"}},
		},
		{
			name:     "priority then age",
			requests: []Request{{ID: 1, Builder: "lin", Submitted: t0}, {ID: 2, Builder: "lin", Submitted: t0.Add(time.Second), Priority: 5}, {ID: 3, Builder: "lin", Submitted: t0.Add(-time.Second)}},
			workers:  []Worker{{Name: "l1", Facts: linux, Slots: 2}},
			want:     []Assignment{{Request: 2, Worker: "l1"}, {Request: 3, Worker: "l1"}},
		},
		{
			name:     "slots respected and work spread to the least loaded",
			requests: []Request{{ID: 1, Builder: "lin", Submitted: t0}, {ID: 2, Builder: "lin", Submitted: t0.Add(1)}, {ID: 3, Builder: "lin", Submitted: t0.Add(2)}},
			workers:  []Worker{{Name: "a", Facts: linux, Slots: 1}, {Name: "b", Facts: linux, Slots: 1}},
			want:     []Assignment{{Request: 1, Worker: "a"}, {Request: 2, Worker: "b"}},
		},
		{
			name:     "checkout preferred",
			requests: []Request{{ID: 1, Builder: "lin", Submitted: t0}},
			workers:  []Worker{{Name: "a", Facts: linux}, {Name: "b", Facts: linux, Checkouts: map[string]bool{"lin": true}}},
			want:     []Assignment{{Request: 1, Worker: "b"}},
		},
		{
			name:     "eager before reluctant; reluctant waits while an eager one is online; draining and offline take nothing",
			requests: []Request{{ID: 1, Builder: "lin", Submitted: t0}, {ID: 2, Builder: "lin", Submitted: t0.Add(1)}},
			workers: []Worker{
				{Name: "a", Facts: linux, Availability: drover.Reluctant, Checkouts: map[string]bool{"lin": true}},
				{Name: "b", Facts: linux, Availability: drover.Eager},
				{Name: "c", Facts: linux, Availability: drover.Draining},
				{Name: "d", Facts: linux, Availability: drover.Offline},
			},
			want: []Assignment{{Request: 1, Worker: "b"}},
		},
		{
			name:     "reluctant used when no eager worker is eligible",
			requests: []Request{{ID: 1, Builder: "lin", Submitted: t0}},
			workers: []Worker{
				{Name: "a", Facts: linux, Availability: drover.Reluctant},
				{Name: "m", Facts: mac, Availability: drover.Eager},
			},
			want: []Assignment{{Request: 1, Worker: "a"}},
		},
		{
			name:     "max builds caps the builder fleet-wide, others still served",
			requests: []Request{{ID: 1, Builder: "capped", Submitted: t0}, {ID: 2, Builder: "capped", Submitted: t0.Add(1)}, {ID: 3, Builder: "lin", Submitted: t0.Add(2)}},
			workers:  []Worker{{Name: "a", Facts: linux, Slots: 3}},
			want:     []Assignment{{Request: 1, Worker: "a"}, {Request: 3, Worker: "a"}},
		},
		{
			name:     "already running counts against the cap",
			requests: []Request{{ID: 1, Builder: "capped", Submitted: t0}},
			workers:  []Worker{{Name: "a", Facts: linux, Slots: 3}},
			running:  map[string]int{"capped": 1},
		},
		{
			name:     "pinned builder",
			requests: []Request{{ID: 1, Builder: "pinned", Submitted: t0}},
			workers:  []Worker{{Name: "w1"}, {Name: "w2"}},
			want:     []Assignment{{Request: 1, Worker: "w2"}},
		},
		{
			name:     "busy builder does not block the next",
			requests: []Request{{ID: 1, Builder: "mac", Submitted: t0}, {ID: 2, Builder: "lin", Submitted: t0.Add(1)}},
			workers:  []Worker{{Name: "l1", Facts: linux}},
			want:     []Assignment{{Request: 2, Worker: "l1"}},
		},
		{
			name:     "unknown builder skipped",
			requests: []Request{{ID: 1, Builder: "gone", Submitted: t0}},
			workers:  []Worker{{Name: "l1", Facts: linux}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(Snapshot{Requests: tt.requests, Builders: builders, Workers: tt.workers, RunningByBuilder: tt.running}, t0).Assignments
			for i := range got {
				if got[i].Why == "" {
					t.Errorf("assignment %d has no reason", i)
				}
				got[i].Why = ""
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decide = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDecideLongQueue shows that once a builder's workers are full, its
// later requests wait with the same reason, while a request of a group and
// requests of other builders are still weighed on their own.
func TestDecideLongQueue(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	builders := map[string]*drover.Builder{"a": {Name: "a"}, "b": {Name: "b", Workers: []string{"wb"}}, "m": {Name: "m", Workers: []string{"nobody"}}}
	var reqs []Request
	for i := range 100 {
		reqs = append(reqs, Request{ID: int64(i + 1), Builder: "a", Submitted: t0.Add(time.Duration(i) * time.Second)})
	}
	reqs = append(reqs,
		Request{ID: 200, Builder: "a", Submitted: t0.Add(time.Hour), Group: "g"},
		Request{ID: 201, Builder: "b", Submitted: t0.Add(time.Hour)},
		Request{ID: 202, Builder: "m", Submitted: t0.Add(time.Hour)},
		Request{ID: 203, Builder: "m", Submitted: t0.Add(time.Hour)},
	)
	workers := []Worker{{Name: "w1", Slots: 2}, {Name: "w2", Slots: 1, Groups: map[string]bool{"g": true}}, {Name: "wb", Slots: 1}}
	d := Decide(Snapshot{Requests: reqs, Builders: builders, Workers: workers}, t0.Add(2*time.Hour))
	var got []int64
	for _, a := range d.Assignments {
		got = append(got, a.Request)
	}
	if want := []int64{1, 2, 3, 4}; !reflect.DeepEqual(got, want) {
		t.Fatalf("assigned %v, want %v", got, want)
	}
	for id := int64(5); id <= 100; id++ {
		if w := d.Waiting[id]; w != (drover.WaitReason{Code: drover.WaitBusy, Text: "all 3 eligible workers busy"}) {
			t.Fatalf("request %d waits because %+v", id, w)
		}
	}
	if why := d.Waiting[200]; why.Code != drover.WaitShardBusy || why.Text != "the 2 eligible workers not already running a part of this step are busy" {
		t.Fatalf("request of a group waits because %+v", why)
	}
	if why := d.Waiting[201]; why.Text != "all 1 eligible workers busy" { // a's requests filled wb first
		t.Fatalf("b's request waits because %+v", why)
	}
	for _, id := range []int64{202, 203} {
		if _, ok := d.NoWorkerSince[id]; !ok || d.Waiting[id].Code != drover.WaitNoWorker || d.Waiting[id].Text != "no eligible worker online" {
			t.Fatalf("request %d: no worker since %v, waits because %+v", id, d.NoWorkerSince[id], d.Waiting[id])
		}
	}
}

func TestCollapse(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	builders := map[string]*drover.Builder{
		"c":  {Name: "c", Collapse: true},
		"nc": {Name: "nc"},
	}
	req := func(id int64, builder, branch string, at int, collapsible bool) Request {
		return Request{ID: id, Builder: builder, Repository: "r", Branch: branch, Submitted: t0.Add(time.Duration(at) * time.Second), Collapsible: collapsible}
	}
	reqs := []Request{
		req(1, "c", "main", 1, true),
		req(2, "c", "main", 2, true),
		req(3, "c", "main", 3, true),  // newest on main: wins
		req(4, "c", "dev", 1, true),   // another branch
		req(5, "c", "main", 4, false), // forced: never collapses
		req(6, "nc", "main", 1, true), // builder does not collapse
		req(7, "nc", "main", 2, true),
	}
	d := Decide(Snapshot{Requests: reqs, Builders: builders}, t0.Add(time.Minute))
	if want := map[int64]int64{1: 3, 2: 3}; !reflect.DeepEqual(d.Collapsed, want) {
		t.Errorf("Collapsed = %v, want %v", d.Collapsed, want)
	}
	for id := range d.Collapsed {
		if _, ok := d.Waiting[id]; ok {
			t.Errorf("collapsed request %d is also waiting: %+v", id, d.Waiting[id])
		}
	}
	if _, ok := d.Waiting[3]; !ok {
		t.Error("the newest request has no reason to wait")
	}
}

// Expiry and the next wake-up are decisions too: the master only acts.
func TestExpiryAndNextWakeUp(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	builders := map[string]*drover.Builder{
		"mac":   {Name: "mac", Requires: []drover.Requirement{mustReq(t, "os", "macos")}},
		"short": {Name: "short", Requires: []drover.Requirement{mustReq(t, "os", "macos")}, ExpireAfter: time.Minute},
		"lin":   {Name: "lin"},
	}
	workers := []Worker{{Name: "r", Availability: drover.Reluctant}, {Name: "e", Availability: drover.Eager, Running: 1}}
	reqs := []Request{
		{ID: 1, Builder: "mac", Submitted: t0},
		{ID: 2, Builder: "short", Submitted: t0},
		{ID: 3, Builder: "lin", Submitted: t0},
	}
	snap := Snapshot{Requests: reqs, Builders: builders, Workers: workers, ExpireAfter: time.Hour, ReluctantAfter: 10 * time.Minute}

	d := Decide(snap, t0)
	if len(d.Expired) != 0 {
		t.Fatalf("expired at once: %v", d.Expired)
	}
	if d.NoWorkerSince[1] != t0 || d.NoWorkerSince[2] != t0 {
		t.Fatalf("NoWorkerSince = %v", d.NoWorkerSince)
	}
	if _, ok := d.NoWorkerSince[3]; ok {
		t.Fatal("a request with an eligible worker online has no-worker time")
	}
	if d.Waiting[3].Code != drover.WaitReluctant {
		t.Fatalf("request 3 waits because %+v", d.Waiting[3])
	}
	if want := t0.Add(time.Minute); !d.Next.Equal(want) { // short expires first
		t.Fatalf("Next = %v, want %v", d.Next, want)
	}

	snap.NoWorkerSince = d.NoWorkerSince
	d = Decide(snap, t0.Add(time.Minute))
	if why := d.Expired[2]; why != "expired: no eligible worker online for 1m0s" {
		t.Fatalf("Expired = %v", d.Expired)
	}
	if _, ok := d.Waiting[2]; ok {
		t.Error("an expired request is still waiting")
	}
	if want := t0.Add(10 * time.Minute); !d.Next.Equal(want) { // the reluctant wait ends before mac expires
		t.Fatalf("Next = %v, want %v", d.Next, want)
	}
	d = Decide(snap, t0.Add(10*time.Minute))
	if len(d.Assignments) != 1 || d.Assignments[0] != (Assignment{Request: 3, Worker: "r", Why: d.Assignments[0].Why}) {
		t.Fatalf("after the reluctant wait: %+v", d.Assignments)
	}

	// A master that sees only part of the site's fleet never expires.
	snap.Partial = true
	d = Decide(snap, t0.Add(2*time.Hour))
	if len(d.Expired) != 0 || d.NoWorkerSince[1] != t0 {
		t.Fatalf("partial snapshot: expired %v, no worker since %v", d.Expired, d.NoWorkerSince)
	}
}

// A lock a running build's step is queued for is reserved: a request that
// needs it is not placed on that worker, but the worker's slot stays free
// for the requests behind it, and the request goes elsewhere if it can.
func TestStepLockReservation(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	defs := []drover.LockDef{{Name: "disk", Scope: drover.LockWorker, Max: 1}, {Name: "vm", Max: 1}}
	builders := map[string]*drover.Builder{
		"disk": {Name: "disk", Locks: []drover.LockUse{{Lock: "disk"}}},
		"vm":   {Name: "vm", Locks: []drover.LockUse{{Lock: "vm"}}},
		"free": {Name: "free"},
	}
	snap := Snapshot{
		Builders:  builders,
		Workers:   []Worker{{Name: "a", Slots: 1}, {Name: "b", Slots: 1, Running: 1}},
		Locks:     NewLockTable(defs),
		StepLocks: []LockWait{{Uses: []drover.LockUse{{Lock: "disk"}}, Worker: "a"}, {Uses: []drover.LockUse{{Lock: "vm"}}, Worker: "b"}},
		Requests: []Request{
			{ID: 1, Builder: "vm", Submitted: t0},
			{ID: 2, Builder: "disk", Submitted: t0.Add(1)},
			{ID: 3, Builder: "free", Submitted: t0.Add(2)},
		},
	}
	d := Decide(snap, t0)
	if want := []Assignment{{Request: 3, Worker: "a"}}; len(d.Assignments) != 1 || d.Assignments[0].Request != 3 || d.Assignments[0].Worker != "a" {
		t.Fatalf("assignments %+v, want %+v", d.Assignments, want)
	}
	if w := d.Waiting[1]; w.Code != drover.WaitLock || w.Text != "waiting for lock vm, which a running build's step is queued for" {
		t.Errorf("request 1 waits because %+v", w)
	}
	if w := d.Waiting[2]; w.Code != drover.WaitLock || w.Text != "waiting for lock disk on a, which a running build's step is queued for" {
		t.Errorf("request 2 waits because %+v", w)
	}

	// With a second free worker, the request needing a per-worker lock
	// goes where no step waits for it.
	snap.Workers = append(snap.Workers, Worker{Name: "c", Slots: 1})
	d = Decide(snap, t0)
	got := map[int64]string{}
	for _, a := range d.Assignments {
		got[a.Request] = a.Worker
	}
	if want := map[int64]string{2: "c", 3: "a"}; !reflect.DeepEqual(got, want) {
		t.Errorf("assignments %v, want %v", got, want)
	}
}

// A worker in a downtime takes no new build, whatever its availability
// (downtime beats the worker's own and an operator's setting); a request
// whose eligible workers are all in downtime says so, and the decision
// wakes when a downtime starts or ends.
func TestDowntime(t *testing.T) {
	t0 := time.Date(2026, 6, 3, 8, 30, 0, 0, time.UTC)
	end := t0.Add(90 * time.Minute)
	builders := map[string]*drover.Builder{"b": {Name: "b"}, "only-a": {Name: "only-a", Workers: []string{"a"}}}
	down := "downtime (config): Wed 08:00-10:00 UTC until 10:00"
	snap := Snapshot{
		Builders: builders,
		Workers: []Worker{
			{Name: "a", Availability: drover.Eager, Downtime: down, Until: end, Running: 1, Slots: 2},
			{Name: "b", Availability: drover.Eager, Until: t0.Add(time.Hour)}, // its downtime starts in an hour
		},
		Requests: []Request{{ID: 1, Builder: "only-a", Submitted: t0}, {ID: 2, Builder: "b", Submitted: t0.Add(1)}},
	}
	d := Decide(snap, t0)
	if want := []Assignment{{Request: 2, Worker: "b"}}; len(d.Assignments) != 1 || d.Assignments[0].Request != 2 || d.Assignments[0].Worker != "b" {
		t.Fatalf("assignments %+v, want %+v", d.Assignments, want)
	}
	want := drover.WaitReason{Code: drover.WaitUnavailable,
		Text: "every eligible worker is unavailable: a is in downtime (config): Wed 08:00-10:00 UTC until 10:00 (1 build running)"}
	if w := d.Waiting[1]; w != want {
		t.Errorf("request 1 waits because %+v, want %+v", w, want)
	}
	if want := t0.Add(time.Hour); !d.Next.Equal(want) { // b's downtime starts before a's ends
		t.Errorf("Next = %v, want %v", d.Next, want)
	}

	// At the end of the downtime, a takes the request.
	snap.Workers[0].Downtime, snap.Workers[0].Until = "", time.Time{}
	snap.Workers[1].Until = time.Time{}
	d = Decide(snap, end)
	if len(d.Assignments) != 2 || !d.Next.IsZero() {
		t.Errorf("after the downtime: assignments %+v, next %v", d.Assignments, d.Next)
	}

	// An edge already past does not wake anyone.
	snap.Workers[1].Until = end.Add(-time.Minute)
	if d = Decide(snap, end); !d.Next.IsZero() {
		t.Errorf("Next = %v for an edge in the past", d.Next)
	}
}
