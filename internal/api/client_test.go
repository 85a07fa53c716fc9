package api

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

func TestClientBuilders(t *testing.T) {
	f := newFixture(t, Options{Version: "1.2.3"})
	ctx := context.Background()
	f.addWorker(t, "deb1", drover.Facts{"os": {"linux", "debian"}, "gcc": {"12.2.0-14"}})
	f.addWorker(t, "mac1", drover.Facts{"os": {"darwin"}})
	b1, _ := f.startBuild(t, "linux-gcc", "deb1")
	f.finish(t, b1.ID, drover.Success, false)
	b2, _ := f.startBuild(t, "linux-gcc", "deb1")
	if _, err := f.op.Force(ctx, "linux-gcc", ForceRequest{}); err != nil {
		t.Fatal(err)
	}

	v, err := f.reader.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != "1.2.3" || v.Protocol != workerproto.ProtocolVersion {
		t.Errorf("Version = %+v", v)
	}

	sums, err := f.reader.Builders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 2 || sums[0].Name != "linux-gcc" || sums[1].Name != "docs" {
		t.Fatalf("Builders = %+v, want linux-gcc then docs in config order", sums)
	}
	if got := sums[0]; got.LastBuild == nil || got.LastBuild.ID != b2.ID || got.Pending != 1 || !got.Stable || got.Classes["compiler"] != "gcc" {
		t.Errorf("linux-gcc summary = %+v, want last build %d, 1 pending, stable, classes", got, b2.ID)
	}
	if got := sums[1]; got.LastBuild != nil || got.Pending != 0 || got.RecentBuilds != nil {
		t.Errorf("docs summary = %+v, want no build, none pending, no recent builds", got)
	}

	one, err := f.reader.Builder(ctx, "linux-gcc")
	if err != nil {
		t.Fatal(err)
	}
	if ids := buildIDs(one.RecentBuilds); !slices.Equal(ids, []int64{b2.ID, b1.ID}) {
		t.Errorf("recent builds = %v, want %v", ids, []int64{b2.ID, b1.ID})
	}
	if one.Pending != 1 || one.LastBuild == nil || one.LastBuild.ID != b2.ID {
		t.Errorf("Builder = %+v", one)
	}
	// Requirements come back usable even though they crossed as JSON.
	if ok, why := one.Requires[1].Check(drover.Facts{"gcc": {"12"}}); !ok {
		t.Errorf("decoded requirement does not hold: %s", why)
	}

	el, err := f.reader.Eligibility(ctx, "linux-gcc")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"deb1": true, "mac1": false}
	if len(el) != 2 {
		t.Fatalf("Eligibility = %+v", el)
	}
	for _, e := range el {
		if e.Eligible != want[e.Worker] || len(e.Reasons) == 0 {
			t.Errorf("eligibility of %s = %+v, want eligible=%v with reasons", e.Worker, e, want[e.Worker])
		}
	}
}

func TestClientForce(t *testing.T) {
	tests := []struct {
		name       string
		req        ForceRequest
		wantReason string
	}{
		{"defaults", ForceRequest{}, "forced by operator via API"},
		{"everything", ForceRequest{
			Repository: "https://example.org/proj.git", Branch: "release", Revision: "deadbeef",
			Properties: drover.Properties{"debug": "yes"}, Priority: 5, Reason: "release check",
		}, "release check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Options{})
			ctx := context.Background()
			got, err := f.op.Force(ctx, "docs", tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID == 0 || got.State != drover.RequestPending || got.Builder != "docs" || got.Reason != tt.wantReason {
				t.Errorf("Force = %+v, want pending request for docs with reason %q", got, tt.wantReason)
			}
			want := drover.SourceStamp{Repository: tt.req.Repository, Branch: tt.req.Branch, Revision: tt.req.Revision}
			if got.Source != want || got.Priority != tt.req.Priority || got.Properties["debug"] != tt.req.Properties["debug"] {
				t.Errorf("Force = %+v, want source %+v, priority %d, properties %v", got, want, tt.req.Priority, tt.req.Properties)
			}
			stored, err := f.st.GetRequest(ctx, got.ID)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Reason != tt.wantReason || stored.Source != want {
				t.Errorf("stored request = %+v", stored)
			}
		})
	}
}

func TestClientBuildsAndRequests(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	f.addWorker(t, "deb1", nil)
	f.addWorker(t, "deb2", nil)
	b1, _ := f.startBuild(t, "linux-gcc", "deb1")
	f.finish(t, b1.ID, drover.Failure, false)
	b2, l2 := f.startBuild(t, "docs", "deb2")
	b3, _ := f.startBuild(t, "linux-gcc", "deb2")

	tests := []struct {
		name string
		q    BuildQuery
		want []int64
	}{
		{"all newest first", BuildQuery{}, []int64{b3.ID, b2.ID, b1.ID}},
		{"builder", BuildQuery{Builder: "linux-gcc"}, []int64{b3.ID, b1.ID}},
		{"worker", BuildQuery{Worker: "deb2"}, []int64{b3.ID, b2.ID}},
		{"running", BuildQuery{State: drover.BuildRunning}, []int64{b3.ID, b2.ID}},
		{"finished", BuildQuery{State: drover.BuildFinished}, []int64{b1.ID}},
		{"limit", BuildQuery{Limit: 1}, []int64{b3.ID}},
		{"before", BuildQuery{Before: b3.ID, Limit: 1}, []int64{b2.ID}},
		{"none", BuildQuery{Builder: "nosuch"}, []int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.reader.Builds(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if ids := buildIDs(got); !slices.Equal(ids, tt.want) {
				t.Errorf("Builds(%+v) = %v, want %v", tt.q, ids, tt.want)
			}
		})
	}

	d, err := f.reader.Build(ctx, b2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Build.ID != b2.ID || d.Build.Builder != "docs" || d.Build.Number != 1 || d.Build.Source.Revision != "abc123" {
		t.Errorf("Build = %+v", d.Build)
	}
	if len(d.Steps) != 1 || d.Steps[0].Name != "compile" || len(d.Logs) != 1 || d.Logs[0].ID != l2.ID {
		t.Errorf("Build steps = %+v, logs = %+v", d.Steps, d.Logs)
	}
	byNum, err := f.reader.BuildByNumber(ctx, "linux-gcc", 2)
	if err != nil {
		t.Fatal(err)
	}
	if byNum.Build.ID != b3.ID {
		t.Errorf("BuildByNumber(linux-gcc, 2) = build %d, want %d", byNum.Build.ID, b3.ID)
	}
	steps, err := f.reader.Steps(ctx, b3.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || steps[0].BuildID != b3.ID {
		t.Errorf("Steps = %+v", steps)
	}

	// Cancelling a running build ends it; cancelling it again conflicts.
	if err := f.op.CancelBuild(ctx, b2.ID, "no longer needed"); err != nil {
		t.Fatal(err)
	}
	got, err := f.st.GetBuild(ctx, b2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != drover.BuildFinished || got.Result != drover.Cancelled || got.Summary != "no longer needed" {
		t.Errorf("cancelled build = %+v", got)
	}
	if err := f.op.CancelBuild(ctx, b2.ID, ""); drover.KindOf(err) != drover.Conflict {
		t.Errorf("second CancelBuild = %v, want a conflict", err)
	}

	rd, err := f.reader.Request(ctx, b3.RequestID)
	if err != nil {
		t.Fatal(err)
	}
	if rd.Request.ID != b3.RequestID || rd.Request.State != drover.RequestClaimed || !slices.Equal(buildIDs(rd.Builds), []int64{b3.ID}) {
		t.Errorf("Request = %+v", rd)
	}

	queued, err := f.op.Force(ctx, "docs", ForceRequest{Priority: 3})
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := f.reader.Requests(ctx, RequestQuery{State: drover.RequestPending})
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 1 || reqs[0].ID != queued.ID {
		t.Errorf("pending Requests = %+v, want just %d", reqs, queued.ID)
	}
	all, err := f.reader.Requests(ctx, RequestQuery{Builder: "linux-gcc"})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Errorf("linux-gcc Requests = %+v, want 2", all)
	}
	cancelled, err := f.op.CancelRequest(ctx, queued.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if cancelled.State != drover.RequestCancelled {
		t.Errorf("CancelRequest = %+v, want cancelled", cancelled)
	}
	if _, err := f.op.CancelRequest(ctx, queued.ID, ""); drover.KindOf(err) != drover.Conflict {
		t.Errorf("second CancelRequest = %v, want a conflict", err)
	}
}

func TestClientWorkersAndChanges(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	f.addWorker(t, "b-worker", drover.Facts{"os": {"freebsd"}})
	f.addWorker(t, "a-worker", drover.Facts{"os": {"linux"}})
	b, _ := f.startBuild(t, "docs", "a-worker")

	ws, err := f.reader.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 2 || ws[0].Name != "a-worker" || ws[1].Facts.Get("os") != "freebsd" {
		t.Errorf("Workers = %+v", ws)
	}
	wd, err := f.reader.Worker(ctx, "a-worker")
	if err != nil {
		t.Fatal(err)
	}
	if wd.Name != "a-worker" || !wd.Connected || !slices.Equal(buildIDs(wd.Builds), []int64{b.ID}) {
		t.Errorf("Worker = %+v", wd)
	}

	when := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	in := &drover.Change{
		ID: 999, Repository: "https://example.org/proj.git", Branch: "main", Revision: "c0ffee",
		Author: "Ada <ada@example.org>", Comments: "fix the thing", Files: []string{"a.c", "b.c"},
		Category: "push", Properties: drover.Properties{"ci": "full"}, When: when,
	}
	got, err := f.op.SendChange(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID == 0 || got.ID == 999 || got.Revision != "c0ffee" || !got.When.Equal(when) || !slices.Equal(got.Files, in.Files) || got.Properties["ci"] != "full" {
		t.Errorf("SendChange = %+v", got)
	}
	before := time.Now().Add(-time.Second)
	now, err := f.op.SendChange(ctx, &drover.Change{Branch: "main", Revision: "f00d"})
	if err != nil {
		t.Fatal(err)
	}
	if now.When.Before(before) {
		t.Errorf("change without a time got When %v, want now", now.When)
	}
	cs, err := f.reader.Changes(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].ID != now.ID || cs[1].ID != got.ID {
		t.Errorf("Changes = %+v, want newest first", cs)
	}
	if cs, err := f.reader.Changes(ctx, 1); err != nil || len(cs) != 1 {
		t.Errorf("Changes(limit 1) = %v, %v", cs, err)
	}
}

func TestClientLog(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	_, l := f.startBuild(t, "docs", "w")
	f.appendLog(t, l.ID, "hello, world\n", true)

	info, err := f.reader.LogInfo(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Bytes != 13 || !info.Complete || info.Name != "stdio" {
		t.Errorf("LogInfo = %+v", info)
	}
	tests := []struct {
		offset int64
		want   string
	}{
		{0, "hello, world\n"},
		{7, "world\n"},
		{13, ""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		if err := f.reader.Log(ctx, l.ID, tt.offset, false, &buf); err != nil {
			t.Fatalf("Log(offset %d): %v", tt.offset, err)
		}
		if buf.String() != tt.want {
			t.Errorf("Log(offset %d) = %q, want %q", tt.offset, buf.String(), tt.want)
		}
	}
	err = f.reader.Log(ctx, l.ID, 100, false, &bytes.Buffer{})
	if drover.KindOf(err) != drover.Invalid || !strings.Contains(err.Error(), "past the end") {
		t.Errorf("Log past the end = %v, want invalid with the backend's reason", err)
	}
}

func TestWaitRequest(t *testing.T) {
	f := newFixture(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A request whose first build is lost to an infra failure and retried:
	// WaitRequest must wait through the retry for the final result.
	req, err := f.op.Force(ctx, "docs", ForceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		b   *drover.Build
		r   *drover.BuildRequest
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, r, err := f.reader.WaitRequest(ctx, req.ID)
		done <- result{b, r, err}
	}()
	time.Sleep(30 * time.Millisecond)
	first, _ := f.claim(t, req.ID, "w1")
	f.finish(t, first.ID, drover.Retry, true)
	select {
	case r := <-done:
		t.Fatalf("WaitRequest returned after a retry: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	second, _ := f.claim(t, req.ID, "w2")
	f.finish(t, second.ID, drover.Failure, false)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.b == nil || r.b.ID != second.ID || r.b.Result != drover.Failure || r.r.State != drover.RequestFinished || r.r.Tries != 2 {
		t.Errorf("WaitRequest = %+v, %+v; want build %d failed, request finished after 2 tries", r.b, r.r, second.ID)
	}

	// A request cancelled before any build ends the wait with no build.
	req2, err := f.op.Force(ctx, "docs", ForceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		b, r, err := f.reader.WaitRequest(ctx, req2.ID)
		done <- result{b, r, err}
	}()
	time.Sleep(30 * time.Millisecond)
	if _, err := f.op.CancelRequest(ctx, req2.ID, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	r = <-done
	if r.err != nil || r.b != nil || r.r.State != drover.RequestCancelled {
		t.Errorf("WaitRequest on a cancelled request = %+v, %+v, %v", r.b, r.r, r.err)
	}

	// An unknown request fails at once.
	if _, _, err := f.reader.WaitRequest(ctx, 12345); drover.KindOf(err) != drover.NotFound {
		t.Errorf("WaitRequest(unknown) = %v, want not found", err)
	}
	// A caller that gives up gets its context's error.
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	defer stop()
	req3, err := f.op.Force(ctx, "docs", ForceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.reader.WaitRequest(short, req3.ID); err == nil || short.Err() == nil {
		t.Errorf("WaitRequest past its deadline = %v", err)
	}
}

func TestClientUnavailable(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client(readerToken)
	f.srv.Close()
	_, err := c.Workers(context.Background())
	if drover.KindOf(err) != drover.Unavailable || !strings.HasPrefix(err.Error(), "unavailable: ") {
		t.Errorf("call to a closed server = %v, want unavailable", err)
	}
}

func buildIDs(bs []drover.Build) []int64 {
	ids := []int64{}
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	return ids
}
