package agent

import (
	"context"
	"testing"

	"github.com/drover-ci/drover"
)

// POST /upload refuses what it cannot do, with the worker's error kind.
func TestUploadFromCommandRefusals(t *testing.T) {
	m := startFakeMaster(t, false)
	dir := t.TempDir()
	runAgent(t, newTestAgent(t, m, dir, nil))
	m.Session(t)
	socket := controlPath(waitDir(t, dir))
	ctx := context.Background()
	if err := UploadFromCommand(ctx, socket, UploadRequest{CommandID: "nope", Path: "/tmp/x"}); drover.KindOf(err) != drover.NotFound {
		t.Errorf("upload for an unknown command: %v, want NotFound", err)
	}
	if err := UploadFromCommand(ctx, socket, UploadRequest{CommandID: "c1"}); drover.KindOf(err) != drover.Invalid {
		t.Errorf("upload without a path: %v, want Invalid", err)
	}
	if err := UploadFromCommand(ctx, socket+".missing", UploadRequest{CommandID: "c1", Path: "x"}); drover.KindOf(err) != drover.Unavailable {
		t.Errorf("upload with no worker: %v, want Unavailable", err)
	}
}
