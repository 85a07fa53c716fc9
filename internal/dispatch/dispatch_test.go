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
		if d.Waiting[id] != "all 3 eligible workers busy" {
			t.Fatalf("request %d waits because %q", id, d.Waiting[id])
		}
	}
	if why := d.Waiting[200]; why != "the 2 eligible workers not already running a part of this step are busy" {
		t.Fatalf("request of a group waits because %q", why)
	}
	if why := d.Waiting[201]; why != "all 1 eligible workers busy" { // a's requests filled wb first
		t.Fatalf("b's request waits because %q", why)
	}
	for _, id := range []int64{202, 203} {
		if !d.NoEligible[id] || d.Waiting[id] != "no eligible worker online" {
			t.Fatalf("request %d: no eligible %v, waits because %q", id, d.NoEligible[id], d.Waiting[id])
		}
	}
}
