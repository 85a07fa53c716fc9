package dispatch

import (
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

func TestReluctantAfter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	builders := map[string]*drover.Builder{"b": {Name: "b"}}
	workers := []Worker{
		{Name: "busy-eager", Availability: drover.Eager, Running: 1},
		{Name: "idle-reluctant", Availability: drover.Reluctant},
	}
	snap := Snapshot{Requests: []Request{{ID: 1, Builder: "b", Submitted: t0}}, Builders: builders, Workers: workers, ReluctantAfter: 10 * time.Minute}
	d := Decide(snap, t0.Add(time.Minute))
	if len(d.Assignments) != 0 || !strings.Contains(d.Waiting[1].Text, "only reluctant workers free") || !strings.Contains(d.Waiting[1].Text, "9m0s more") {
		t.Errorf("after 1m: %+v", d)
	}
	d = Decide(snap, t0.Add(11*time.Minute))
	if len(d.Assignments) != 1 || d.Assignments[0].Worker != "idle-reluctant" || !strings.Contains(d.Assignments[0].Why, "reluctant") {
		t.Errorf("after 11m: %+v", d)
	}
}

func TestWaitingReasons(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mac, _ := drover.ParseRequirement("os", "macos")
	builders := map[string]*drover.Builder{
		"mac":    {Name: "mac", Requires: []drover.Requirement{mac}},
		"any":    {Name: "any"},
		"capped": {Name: "capped", MaxBuilds: 1},
	}
	d := Decide(Snapshot{
		Requests:         []Request{{ID: 1, Builder: "mac", Submitted: t0}, {ID: 2, Builder: "any", Submitted: t0}, {ID: 3, Builder: "gone", Submitted: t0}, {ID: 4, Builder: "capped", Submitted: t0}},
		Builders:         builders,
		Workers:          []Worker{{Name: "w", Running: 1}, {Name: "x", Availability: drover.Draining}},
		RunningByBuilder: map[string]int{"capped": 1},
	}, t0)
	want := map[int64]string{1: "no eligible worker online", 2: "all 1 eligible workers busy", 3: "not in the config", 4: "max_builds"}
	for id, w := range want {
		if !strings.Contains(d.Waiting[id].Text, w) {
			t.Errorf("request %d waits %q, want %q", id, d.Waiting[id].Text, w)
		}
	}
	if _, one := d.NoWorkerSince[1]; !one || len(d.NoWorkerSince) != 1 {
		t.Errorf("NoWorkerSince = %v", d.NoWorkerSince)
	}
	d = Decide(Snapshot{Requests: []Request{{ID: 1, Builder: "any", Submitted: t0}}, Builders: builders,
		Workers: []Worker{{Name: "x", Availability: drover.Draining}, {Name: "y", Availability: drover.Offline}}}, t0)
	if !strings.Contains(d.Waiting[1].Text, "x is draining, y is offline") {
		t.Errorf("unavailable: %q", d.Waiting[1].Text)
	}
	// A worker that takes no work but still runs builds says so.
	d = Decide(Snapshot{Requests: []Request{{ID: 1, Builder: "any", Submitted: t0}}, Builders: builders,
		Workers: []Worker{{Name: "x", Availability: drover.Draining, Running: 1}, {Name: "y", Availability: drover.Offline, Running: 2}}}, t0)
	if want := "every eligible worker is unavailable: x is draining (1 build running), y is offline (2 builds running)"; d.Waiting[1].Text != want {
		t.Errorf("unavailable while running: %q, want %q", d.Waiting[1].Text, want)
	}
}

func TestLocksInDispatch(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	defs := []drover.LockDef{{Name: "vm", Max: 2, Scope: drover.LockMaster}, {Name: "gpu", Max: 1, Scope: drover.LockWorker}}
	builders := map[string]*drover.Builder{
		"vm":      {Name: "vm", Locks: []drover.LockUse{{Lock: "vm"}}},
		"vm-excl": {Name: "vm-excl", Locks: []drover.LockUse{{Lock: "vm", Exclusive: true}}},
		"gpu":     {Name: "gpu", Locks: []drover.LockUse{{Lock: "gpu"}}},
		"both":    {Name: "both", Locks: []drover.LockUse{{Lock: "vm"}, {Lock: "gpu"}}},
	}
	fleet := []Worker{{Name: "a", Slots: 10}, {Name: "b", Slots: 10}}
	reqs := func(names ...string) []Request {
		var out []Request
		for i, n := range names {
			out = append(out, Request{ID: int64(i + 1), Builder: n, Submitted: t0.Add(time.Duration(i))})
		}
		return out
	}
	assigned := func(d Decision) []int64 {
		var ids []int64
		for _, a := range d.Assignments {
			ids = append(ids, a.Request)
		}
		return ids
	}
	t.Run("counting lock caps concurrent holders", func(t *testing.T) {
		d := Decide(Snapshot{Requests: reqs("vm", "vm", "vm"), Builders: builders, Workers: fleet, Locks: NewLockTable(defs)}, t0)
		if got := assigned(d); len(got) != 2 || !strings.Contains(d.Waiting[3].Text, "lock vm held 2/2") {
			t.Errorf("assigned %v, waiting %v", got, d.Waiting)
		}
	})
	t.Run("exclusive waiter is not starved by later counting requests", func(t *testing.T) {
		lt := NewLockTable(defs)
		lt.Take([]drover.LockUse{{Lock: "vm"}}, "a", drover.LockHolder{BuildID: 9, Step: -1})
		d := Decide(Snapshot{Requests: reqs("vm-excl", "vm", "vm"), Builders: builders, Workers: fleet, Locks: lt}, t0)
		if got := assigned(d); len(got) != 0 {
			t.Errorf("assigned %v while an exclusive request waits first", got)
		}
		if !strings.Contains(d.Waiting[1].Text, "build 9") || !strings.Contains(d.Waiting[2].Text, "behind request 1") {
			t.Errorf("waiting = %v", d.Waiting)
		}
		lt.Release(9, AllSteps)
		d = Decide(Snapshot{Requests: reqs("vm-excl", "vm", "vm"), Builders: builders, Workers: fleet, Locks: lt}, t0)
		if got := assigned(d); len(got) != 1 || got[0] != 1 {
			t.Errorf("after release: assigned %v, waiting %v", got, d.Waiting)
		}
	})
	t.Run("worker-scoped lock is per worker", func(t *testing.T) {
		d := Decide(Snapshot{Requests: reqs("gpu", "gpu", "gpu"), Builders: builders, Workers: fleet, Locks: NewLockTable(defs)}, t0)
		if len(d.Assignments) != 2 || d.Assignments[0].Worker == d.Assignments[1].Worker {
			t.Errorf("assignments %+v", d.Assignments)
		}
	})
	t.Run("all or nothing", func(t *testing.T) {
		lt := NewLockTable(defs)
		lt.Take([]drover.LockUse{{Lock: "gpu"}}, "a", drover.LockHolder{BuildID: 1, Step: -1})
		lt.Take([]drover.LockUse{{Lock: "gpu"}}, "b", drover.LockHolder{BuildID: 2, Step: -1})
		before := len(lt.Held[LockKey{Name: "vm"}])
		d := Decide(Snapshot{Requests: reqs("both"), Builders: builders, Workers: fleet, Locks: lt}, t0)
		if len(d.Assignments) != 0 || len(lt.Held[LockKey{Name: "vm"}]) != before {
			t.Errorf("partial hold: %+v, vm held %v", d, lt.Held)
		}
		if lt.Take([]drover.LockUse{{Lock: "vm"}, {Lock: "gpu"}}, "a", drover.LockHolder{BuildID: 3}) || len(lt.Held[LockKey{Name: "vm"}]) != 0 {
			t.Errorf("Take took part of a set: %v", lt.Held)
		}
	})
	t.Run("bind and release a request's provisional hold", func(t *testing.T) {
		lt := NewLockTable(defs)
		lt.Take([]drover.LockUse{{Lock: "vm"}}, "a", drover.LockHolder{RequestID: 5, Step: -1})
		lt.Bind(5, 50, 3)
		if h := lt.Held[LockKey{Name: "vm"}]; len(h) != 1 || h[0].BuildID != 50 || h[0].Number != 3 {
			t.Errorf("bound = %+v", h)
		}
		lt.Take([]drover.LockUse{{Lock: "vm"}}, "a", drover.LockHolder{RequestID: 6, Step: -1})
		lt.ReleaseRequest(6)
		if len(lt.Held[LockKey{Name: "vm"}]) != 1 {
			t.Errorf("after ReleaseRequest: %v", lt.Held)
		}
	})
	t.Run("lower max after reload applies to new takes", func(t *testing.T) {
		lt := NewLockTable(defs)
		lt.Take([]drover.LockUse{{Lock: "vm"}}, "", drover.LockHolder{BuildID: 1})
		lt.Take([]drover.LockUse{{Lock: "vm"}}, "", drover.LockHolder{BuildID: 2})
		lt.SetDefs([]drover.LockDef{{Name: "vm", Max: 1, Scope: drover.LockMaster}})
		if len(lt.Held[LockKey{Name: "vm"}]) != 2 || lt.Take([]drover.LockUse{{Lock: "vm"}}, "", drover.LockHolder{BuildID: 3}) {
			t.Errorf("holders kept or new take refused: %v", lt.Held)
		}
	})
}

func TestShardGroupsSpreadOverWorkers(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	builders := map[string]*drover.Builder{"b": {Name: "b"}}
	reqs := []Request{
		{ID: 1, Builder: "b", Submitted: t0, Group: "b7-s2"},
		{ID: 2, Builder: "b", Submitted: t0.Add(1), Group: "b7-s2"},
		{ID: 3, Builder: "b", Submitted: t0.Add(2), Group: "b7-s2"},
	}
	workers := []Worker{
		{Name: "parent", Slots: 4, Running: 1, Groups: map[string]bool{"b7-s2": true}},
		{Name: "a", Slots: 4},
		{Name: "b", Slots: 4},
	}
	d := Decide(Snapshot{Requests: reqs, Builders: builders, Workers: workers}, t0)
	used := map[string]int{}
	for _, a := range d.Assignments {
		used[a.Worker]++
	}
	if len(d.Assignments) != 2 || used["a"] != 1 || used["b"] != 1 || used["parent"] != 0 {
		t.Errorf("assignments %+v", d.Assignments)
	}
	if !strings.Contains(d.Waiting[3].Text, "not already running a part of this step") {
		t.Errorf("third part waits %q", d.Waiting[3].Text)
	}
	if workers[1].Groups != nil {
		t.Error("Decide changed the caller's worker groups")
	}
}
