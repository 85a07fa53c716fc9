package api

import (
	"context"
	"strings"
	"testing"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
)

// addPendingWorker stores a worker that enrolled while approval was
// required.
func (f *fixture) addPendingWorker(t *testing.T, name string) {
	t.Helper()
	w := &drover.Worker{Name: name, Availability: drover.Eager, OS: "freebsd", Arch: "arm64", Approval: drover.ApprovalPending}
	if err := f.st.UpsertWorker(context.Background(), w); err != nil {
		t.Fatal(err)
	}
}

func TestClientApproveReject(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	f.addWorker(t, "deb1", nil)
	f.addPendingWorker(t, "new1")
	sub := f.b.Events()
	t.Cleanup(sub.Close)

	// The list shows every worker, the pending one with its approval.
	ws, err := f.reader.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, w := range ws {
		got[w.Name] = w.Approval
	}
	if got["deb1"] != drover.ApprovalApproved || got["new1"] != drover.ApprovalPending {
		t.Fatalf("listed approvals %v, want deb1 approved and new1 pending", got)
	}

	w, err := f.admin.ApproveWorker(ctx, "new1")
	if err != nil {
		t.Fatal(err)
	}
	if w.Name != "new1" || w.Approval != drover.ApprovalApproved {
		t.Fatalf("ApproveWorker returned %+v, want new1 approved", w)
	}
	select {
	case ev := <-sub.C:
		if ev.Type != events.WorkerChanged || ev.Worker != "new1" {
			t.Errorf("event %+v, want worker-changed for new1", ev)
		}
	default:
		t.Error("approval published no event")
	}

	w, err = f.admin.RejectWorker(ctx, "new1")
	if err != nil {
		t.Fatal(err)
	}
	if w.Approval != drover.ApprovalRejected {
		t.Fatalf("RejectWorker returned approval %q, want rejected", w.Approval)
	}
	// A rejection can be taken back.
	if w, err = f.admin.ApproveWorker(ctx, "new1"); err != nil || w.Approval != drover.ApprovalApproved {
		t.Fatalf("approve after reject: %+v, %v", w, err)
	}
	if !strings.Contains(f.log.String(), "by=\"admin ad0000000001\"") {
		t.Errorf("approval not logged with the admin's token id:\n%s", f.log.String())
	}
	if strings.Contains(f.log.String(), "admin-secret") {
		t.Errorf("the token's secret reached the log:\n%s", f.log.String())
	}
}

func TestApprovalErrors(t *testing.T) {
	f := newFixture(t, Options{PublicReads: true})
	f.addPendingWorker(t, "new1")
	tests := []struct {
		name   string
		method string
		path   string
		auth   string
		status int
		msg    string
	}{
		{"anonymous", "POST", "/api/v1/workers/new1/approve", "", 401, "needs an API token with role admin"},
		{"read role", "POST", "/api/v1/workers/new1/approve", "Bearer " + readerToken, 403, "role read may not do this"},
		{"operator role", "POST", "/api/v1/workers/new1/approve", "Bearer " + operatorToken, 403, "role operator may not do this: it needs role admin"},
		{"operator rejects", "POST", "/api/v1/workers/new1/reject", "Bearer " + operatorToken, 403, "needs role admin"},
		{"unknown worker", "POST", "/api/v1/workers/nope/approve", "Bearer " + adminToken, 404, "worker nope not found"},
		{"reject unknown worker", "POST", "/api/v1/workers/nope/reject", "Bearer " + adminToken, 404, "worker nope not found"},
		{"GET", "GET", "/api/v1/workers/new1/approve", "Bearer " + adminToken, 405, "method GET not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := f.send(t, tt.method, tt.path, tt.auth, "")
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if msg := errorMessage(t, body); !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q, want it to contain %q", msg, tt.msg)
			}
		})
	}
	w, err := f.st.GetWorker(context.Background(), "new1")
	if err != nil {
		t.Fatal(err)
	}
	if w.Approval != drover.ApprovalPending {
		t.Errorf("a refused call changed the approval to %q", w.Approval)
	}
	if _, err := f.op.ApproveWorker(context.Background(), "new1"); drover.KindOf(err) != drover.Unauthorized {
		t.Errorf("operator through the client: %v, want Unauthorized", err)
	}
	if _, err := f.admin.RejectWorker(context.Background(), "nope"); drover.KindOf(err) != drover.NotFound {
		t.Errorf("unknown worker through the client: %v, want NotFound", err)
	}
}
