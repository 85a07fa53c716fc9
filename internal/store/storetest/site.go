package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/store"
)

// testBuildMaster shows that a build's master is stored by ClaimRequest
// and read back by every way of reading builds.
func testBuildMaster(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := addRequest(t, s, "linux", nil)
	b := &drover.Build{Worker: "w", Master: "m1", Started: t0}
	must(t, s.ClaimRequest(ctx, r.ID, b), "claim")
	if b.Master != "m1" {
		t.Fatalf("claimed build's master is %q, want m1", b.Master)
	}
	other := startBuild(t, s, "linux", "w")

	got, err := s.GetBuild(ctx, b.ID)
	must(t, err, "get build")
	wantEqual(t, *got, *b, "build by ID")
	got, err = s.GetBuildByNumber(ctx, "linux", b.Number)
	must(t, err, "get build by number")
	wantEqual(t, *got, *b, "build by number")
	got, err = s.GetBuild(ctx, other.ID)
	must(t, err, "get other build")
	if got.Master != "" {
		t.Fatalf("build claimed without a master has master %q", got.Master)
	}

	list, err := s.ListBuilds(ctx, drover.BuildFilter{Master: "m1"})
	must(t, err, "list builds of m1")
	if len(list) != 1 {
		t.Fatalf("m1 drives %d builds, want 1", len(list))
	}
	wantEqual(t, list[0], *b, "listed build")
	list, err = s.ListBuilds(ctx, drover.BuildFilter{})
	must(t, err, "list builds")
	if len(list) != 2 || list[1].Master != "m1" || list[0].Master != "" {
		t.Fatalf("listed builds: %+v", list)
	}

	must(t, s.Builds("m1").FinishBuild(ctx, b.ID, drover.Success, "", at(time.Hour), false), "finish")
	got, err = s.GetBuild(ctx, b.ID)
	must(t, err, "get finished build")
	if got.Master != "m1" {
		t.Fatalf("finished build's master is %q, want m1", got.Master)
	}
}

// testMasters shows that Heartbeat records a master and replaces its
// record, that ListMasters lists them by ID, and that RemoveMaster
// forgets one, absent or not.
func testMasters(t *testing.T, s store.Store) {
	ctx := context.Background()
	list, err := s.ListMasters(ctx)
	must(t, err, "list no masters")
	if len(list) != 0 {
		t.Fatalf("a new store has masters: %+v", list)
	}

	b := &drover.Master{ID: "b-master", URL: "http://b:8010/", WorkersAddr: "b:9989", Version: "1.0",
		Started: t0, Heartbeat: at(time.Second)}
	must(t, s.Heartbeat(ctx, b), "heartbeat b")
	before := time.Now()
	a := &drover.Master{ID: "a-master", WorkersAddr: "a:9989"}
	must(t, s.Heartbeat(ctx, a), "heartbeat a")
	if a.Started.Before(before.Add(-time.Second)) || a.Heartbeat.Before(before.Add(-time.Second)) {
		t.Fatalf("zero times of a master became %v and %v, want now", a.Started, a.Heartbeat)
	}
	list, err = s.ListMasters(ctx)
	must(t, err, "list masters")
	// SinceBeat is by the database's clock: a's beat was taken by it just
	// now, b's is the given one, long ago.
	if len(list) != 2 || list[0].SinceBeat > time.Minute || list[1].SinceBeat < time.Since(b.Heartbeat)-time.Minute {
		t.Fatalf("since the beats: %+v", list)
	}
	for i := range list {
		list[i].SinceBeat = 0
	}
	wantB := *b
	wantB.Started = t0.UTC()
	wantEqual(t, list, []drover.Master{*a, wantB}, "masters by ID")

	// A later beat replaces every field.
	b2 := &drover.Master{ID: "b-master", URL: "http://b2:8010/", WorkersAddr: "b2:9989", Version: "1.1",
		Started: at(time.Hour), Heartbeat: at(time.Hour + time.Second)}
	must(t, s.Heartbeat(ctx, b2), "heartbeat b again")
	list, err = s.ListMasters(ctx)
	must(t, err, "list masters")
	for i := range list {
		list[i].SinceBeat = 0
	}
	wantEqual(t, list, []drover.Master{*a, *b2}, "masters after a second beat")

	must(t, s.RemoveMaster(ctx, "a-master"), "remove a")
	must(t, s.RemoveMaster(ctx, "a-master"), "remove a again")
	must(t, s.RemoveMaster(ctx, "nobody"), "remove an unknown master")
	list, err = s.ListMasters(ctx)
	must(t, err, "list masters")
	list[0].SinceBeat = 0
	wantEqual(t, list, []drover.Master{*b2}, "masters after removing a")

	wantKind(t, s.Heartbeat(ctx, &drover.Master{URL: "http://x/"}), drover.Invalid, "heartbeat without an ID")
	wantKind(t, s.Heartbeat(ctx, nil), drover.Invalid, "heartbeat of no master")
}

// testAdoptBuild shows when AdoptBuild hands a build over: only a
// running build, only from its current master.
func testAdoptBuild(t *testing.T, s store.Store) {
	ctx := context.Background()
	adopt := func(id int64, from, to string, want bool) {
		t.Helper()
		got, err := s.AdoptBuild(ctx, id, from, to)
		must(t, err, fmt.Sprintf("adopt build %d from %q to %q", id, from, to))
		if got != want {
			t.Fatalf("adopt build %d from %q to %q: %v, want %v", id, from, to, got, want)
		}
	}
	masterOf := func(id int64) string {
		t.Helper()
		b, err := s.GetBuild(ctx, id)
		must(t, err, "get build")
		return b.Master
	}

	r := addRequest(t, s, "linux", nil)
	b := &drover.Build{Worker: "w", Master: "dead"}
	must(t, s.ClaimRequest(ctx, r.ID, b), "claim")

	adopt(b.ID, "someone-else", "m1", false)
	adopt(b.ID, "dead", "m1", true)
	if got := masterOf(b.ID); got != "m1" {
		t.Fatalf("adopted build's master is %q, want m1", got)
	}
	adopt(b.ID, "dead", "m2", false) // m1 got there first
	adopt(b.ID, "m1", "m2", true)    // m1 died too
	if got := masterOf(b.ID); got != "m2" {
		t.Fatalf("twice adopted build's master is %q, want m2", got)
	}

	// A build from before sites has master "".
	legacy := startBuild(t, s, "linux", "w")
	adopt(legacy.ID, "", "m1", true)

	must(t, s.Builds("m2").FinishBuild(ctx, b.ID, drover.Success, "", at(time.Hour), false), "finish")
	adopt(b.ID, "m2", "m3", false)
	if got := masterOf(b.ID); got != "m2" {
		t.Fatalf("finished build's master became %q, want it left m2", got)
	}
	adopt(b.ID+100, "m2", "m3", false)
}

// testConcurrentAdoptBuild races masters to adopt the builds of a dead
// one: each build goes to exactly one, the one that was told it won.
func testConcurrentAdoptBuild(t *testing.T, s store.Store) {
	ctx := context.Background()
	const (
		builds  = 5
		masters = 8
	)
	var ids []int64
	for range builds {
		r := addRequest(t, s, "linux", nil)
		b := &drover.Build{Worker: "w", Master: "dead"}
		must(t, s.ClaimRequest(ctx, r.ID, b), "claim")
		ids = append(ids, b.ID)
	}

	var (
		mu  sync.Mutex
		won = map[int64][]string{}
	)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for m := range masters {
		wg.Go(func() {
			me := fmt.Sprintf("m%d", m)
			<-start
			for i := range ids {
				id := ids[(i+m)%len(ids)]
				ok, err := s.AdoptBuild(ctx, id, "dead", me)
				if err != nil {
					t.Errorf("%s adopts build %d: %v", me, id, err)
					return
				}
				if ok {
					mu.Lock()
					won[id] = append(won[id], me)
					mu.Unlock()
				}
			}
		})
	}
	close(start)
	wg.Wait()

	for _, id := range ids {
		if len(won[id]) != 1 {
			t.Fatalf("build %d adopted by %v, want exactly one master", id, won[id])
		}
		b, err := s.GetBuild(ctx, id)
		must(t, err, "get build")
		if b.Master != won[id][0] {
			t.Fatalf("build %d is driven by %q, but %q was told it won", id, b.Master, won[id][0])
		}
	}
}

// testMarkDisconnected shows that a master marks disconnected its own
// workers and those of no master, and leaves the other masters' alone.
func testMarkDisconnected(t *testing.T, s store.Store) {
	ctx := context.Background()
	connected := func(name, master string) {
		t.Helper()
		must(t, s.UpsertWorker(ctx, &drover.Worker{Name: name, Master: master, Connected: true,
			ConnectedAt: t0, LastSeen: t0, FirstSeen: t0}), "upsert "+name)
	}
	connected("mine", "m1")
	connected("theirs", "m2")
	connected("legacy", "")
	connected("moved", "m1")
	connected("moved", "m2") // it reconnected to m2

	// Enroll stores a worker of no master.
	must(t, s.AddToken(ctx, &drover.Token{ID: "e", Kind: drover.TokenEnroll, Hash: "h", UsesLeft: -1}), "add enroll token")
	enrolled := &drover.Worker{Name: "enrolled", Connected: true, ConnectedAt: t0}
	must(t, s.Enroll(ctx, "e", t0, &drover.Token{ID: "wt", Hash: "h"}, enrolled), "enroll")
	got, err := s.GetWorker(ctx, "enrolled")
	must(t, err, "get enrolled worker")
	if got.Master != "" || !got.Connected {
		t.Fatalf("enrolled worker: %+v, want connected, of no master", got)
	}

	must(t, s.MarkDisconnected(ctx, "m1"), "mark m1's workers disconnected")
	list, err := s.ListWorkers(ctx)
	must(t, err, "list workers")
	state := map[string]string{}
	for _, w := range list {
		switch {
		case w.Connected && w.ConnectedAt.Equal(t0):
			state[w.Name] = "connected to " + w.Master
		case !w.Connected && w.ConnectedAt.IsZero():
			state[w.Name] = "disconnected"
		default:
			t.Fatalf("worker %s half disconnected: %+v", w.Name, w)
		}
		if !w.LastSeen.IsZero() && !w.LastSeen.Equal(t0) {
			t.Fatalf("MarkDisconnected changed LastSeen: %+v", w)
		}
	}
	wantEqual(t, state, map[string]string{
		"mine":     "disconnected",
		"theirs":   "connected to m2",
		"legacy":   "disconnected",
		"moved":    "connected to m2",
		"enrolled": "disconnected",
	}, "workers after m1 restarted")
}

// testNotifyPayload shows the limits of a notice's payload, the same on
// every engine.
func testNotifyPayload(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.Notify(ctx, []byte(`{"storetest":"notify"}`)), "notify")
	must(t, s.Notify(ctx, nil), "notify an empty payload")
	must(t, s.Notify(ctx, []byte(strings.Repeat("x", store.MaxNotifyPayload))), "notify the largest payload")
	wantKind(t, s.Notify(ctx, []byte(strings.Repeat("x", store.MaxNotifyPayload+1))), drover.Invalid, "notify an oversize payload")
	wantKind(t, s.Notify(ctx, []byte("a\x00b")), drover.Invalid, "notify a payload with NUL")
	wantKind(t, s.Notify(ctx, []byte("\xff\xfe")), drover.Invalid, "notify a payload that is not UTF-8")
}

// testListenStops shows that Listen returns nil when its context is done,
// Unavailable when the store is closed under it, and refuses to start on
// a closed store.
func testListenStops(t *testing.T, s store.Store) {
	listen := func(ctx context.Context) <-chan error {
		done := make(chan error, 1)
		// Other tests may share the database and send notices: they are
		// ignored.
		go func() { done <- s.Listen(ctx, func([]byte) {}, func() {}) }()
		return done
	}
	wait := func(done <-chan error, what string) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: Listen did not return", what)
			return nil
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := listen(ctx)
	time.Sleep(50 * time.Millisecond) // let it start listening, mostly
	cancel()
	must(t, wait(done, "cancel"), "Listen after its context was cancelled")

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	done = listen(ctx)
	time.Sleep(50 * time.Millisecond)
	must(t, s.Close(), "close")
	wantKind(t, wait(done, "close"), drover.Unavailable, "Listen on a store closed under it")

	wantKind(t, wait(listen(ctx), "closed store"), drover.Unavailable, "Listen on a closed store")
	wantKind(t, s.Notify(ctx, []byte("x")), drover.Unavailable, "Notify on a closed store")
}

// testFencing shows that a master's ID is the fencing token of every
// write of a running build: once another master adopted the build, the
// old one's late writes fail with ErrNotDriver and change nothing, and
// the new one's go through.
func testFencing(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := addRequest(t, s, "linux", nil)
	b := &drover.Build{Worker: "w", Master: "old", Started: at(time.Minute)}
	must(t, s.ClaimRequest(ctx, r.ID, b), "claim")
	old, adopter := s.Builds("old"), s.Builds("new")
	step := drover.Step{BuildID: b.ID, Index: 0, Name: "compile", State: drover.StepPending}
	must(t, old.StartBuild(ctx, b.ID, drover.Properties{"a": "1"}, []drover.Step{step}, nil), "start")
	step.State, step.Started = drover.StepRunning, at(2*time.Minute)
	l := &drover.Log{BuildID: b.ID, StepIndex: 0, Name: "stdio"}
	must(t, old.StartStep(ctx, &step, l), "start step")
	must(t, old.SetLogProgress(ctx, []drover.Log{{ID: l.ID, Seq: 3, SeqBytes: 30}}), "progress")

	if ok, err := s.AdoptBuild(ctx, b.ID, "old", "new"); err != nil || !ok {
		t.Fatalf("adopt: %v, %v", ok, err)
	}
	late := step
	late.State, late.Result, late.Finished = drover.StepFinished, drover.Failure, at(3*time.Minute)
	fenced := func(what string, err error) {
		t.Helper()
		wantKind(t, err, drover.Conflict, what)
		if !errors.Is(err, store.ErrNotDriver) {
			t.Fatalf("%s: %v does not wrap ErrNotDriver", what, err)
		}
	}
	fenced("update step", old.UpdateStep(ctx, &late))
	fenced("finish step", old.FinishStep(ctx, &late, &drover.Log{ID: l.ID, BuildID: b.ID, Bytes: 99, Complete: true}))
	fenced("properties", old.SetBuildProperties(ctx, b.ID, drover.Properties{"a": "2"}))
	fenced("progress", old.SetLogProgress(ctx, []drover.Log{{ID: l.ID, Seq: 9, SeqBytes: 90}}))
	fenced("url", old.SetStepURL(ctx, b.ID, 0, "report", "https://example.org/r"))
	fenced("finish", old.FinishBuild(ctx, b.ID, drover.Failure, "late", at(time.Hour), false))
	fenced("abandon", old.AbandonBuild(ctx, b.ID, store.Abandon{Result: drover.Retry}))

	got, err := s.GetBuild(ctx, b.ID)
	must(t, err, "get build")
	if got.State != drover.BuildRunning || got.Properties["a"] != "1" {
		t.Fatalf("the old master's late writes changed the build: %+v", got)
	}
	steps, err := s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	if steps[0].State != drover.StepRunning || len(steps[0].URLs) != 0 {
		t.Fatalf("the old master's late writes changed the step: %+v", steps[0])
	}
	gl, err := s.GetLog(ctx, l.ID)
	must(t, err, "get log")
	if gl.Seq != 3 || gl.SeqBytes != 30 || gl.Complete {
		t.Fatalf("the old master's late writes changed the log: %+v", gl)
	}

	must(t, adopter.UpdateStep(ctx, &late), "the adopter updates the step")
	must(t, adopter.FinishBuild(ctx, b.ID, drover.Failure, "", at(time.Hour), false), "the adopter finishes")
	wantKind(t, s.Builds("new").SetBuildProperties(ctx, b.ID+100, nil), drover.NotFound, "an unknown build")
}

// testAbandonBuild shows a build its master cannot follow ended in one
// transaction: its unfinished steps, its incomplete logs, the build and
// its request.
func testAbandonBuild(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := startBuild(t, s, "linux", "w")
	w := s.Builds("")
	steps := []drover.Step{
		{BuildID: b.ID, Index: 0, Name: "checkout", State: drover.StepFinished, Result: drover.Success, Started: at(time.Minute), Finished: at(2 * time.Minute)},
		{BuildID: b.ID, Index: 1, Name: "compile", State: drover.StepRunning, Started: at(2 * time.Minute)},
		{BuildID: b.ID, Index: 2, Name: "test", State: drover.StepPending},
	}
	l := &drover.Log{BuildID: b.ID, StepIndex: 1, Name: "stdio"}
	must(t, w.StartBuild(ctx, b.ID, nil, steps, l), "start")
	must(t, w.AbandonBuild(ctx, b.ID, store.Abandon{
		Result: drover.Retry, Summary: "master restarted during the build", StepSummary: "master restarted",
		Logs: []drover.Log{{ID: l.ID, BuildID: b.ID, Bytes: 42}}, Finished: at(time.Hour), Requeue: true,
	}), "abandon")

	got, err := s.GetBuild(ctx, b.ID)
	must(t, err, "get build")
	if got.State != drover.BuildFinished || got.Result != drover.Retry || got.Summary != "master restarted during the build" {
		t.Fatalf("abandoned build: %+v", got)
	}
	req, err := s.GetRequest(ctx, b.RequestID)
	must(t, err, "get request")
	if req.State != drover.RequestPending {
		t.Fatalf("requeued request is %s", req.State)
	}
	ss, err := s.ListSteps(ctx, b.ID)
	must(t, err, "list steps")
	if ss[0].Result != drover.Success || ss[0].Summary != "" {
		t.Errorf("a finished step was changed: %+v", ss[0])
	}
	for _, st := range ss[1:] {
		if st.State != drover.StepFinished || st.Result != drover.Retry || st.Summary != "master restarted" || !st.Finished.Equal(at(time.Hour)) {
			t.Errorf("unfinished step not ended: %+v", st)
		}
	}
	gl, err := s.GetLog(ctx, l.ID)
	must(t, err, "get log")
	if !gl.Complete || gl.Bytes != 42 {
		t.Errorf("log not completed: %+v", gl)
	}
	wantKind(t, w.AbandonBuild(ctx, b.ID, store.Abandon{Result: drover.Retry}), drover.Conflict, "abandon a finished build")
	wantKind(t, w.AbandonBuild(ctx, b.ID, store.Abandon{Result: drover.Retry, Logs: []drover.Log{{ID: l.ID, BuildID: b.ID + 1}}}), drover.Invalid, "a log of another build")
}
