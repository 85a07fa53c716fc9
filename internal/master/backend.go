package master

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/config"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/logstore"
	"github.com/drover-ci/drover/internal/tokens"
	"github.com/drover-ci/drover/internal/workerhub"
)

// backendStore is what the API's facade reads from the store, beyond the
// API's own Reader: tokens, to authenticate, and artifacts, to serve them.
type backendStore interface {
	api.Reader
	GetToken(ctx context.Context, id string) (*drover.Token, error)
	GetArtifact(ctx context.Context, id int64) (*drover.Artifact, error)
}

// backend is the master as the REST API and the web UI see it: a thin
// facade whose every method hands the call to the part that owns it.
type backend struct {
	reader    backendStore
	cfg       func() *config.Config
	configs   *configs
	changes   *changesIn
	runner    *runner
	disp      *dispatcher
	fleet     *fleet
	locks     *lockManager
	site      *site
	logs      *logstore.Dir
	bus       *events.Bus
	artifacts string // the artifact directory
	servedAt  string // the URL the caller serves the master at
	reload    func(ctx context.Context) error
	auth      *tokens.Cache // API tokens checked lately
	now       func() time.Time
	logger    *slog.Logger
}

var (
	_ api.Backend       = (*backend)(nil)
	_ api.ArtifactFiles = (*backend)(nil)
)

func (b *backend) Reader() api.Reader {
	return fleetReader{Reader: b.reader, fleet: b.fleet, now: b.now}
}
func (b *backend) Builders() []drover.Builder { return b.cfg().Builders }
func (b *backend) Title() string              { return b.cfg().Master.Title }
func (b *backend) Events() *events.Subscription {
	return b.bus.Subscribe()
}

func (b *backend) Builder(name string) (*drover.Builder, bool) { return b.cfg().Builder(name) }

// fleetReader is the store's read side with what the master adds to a
// worker as it serves it: the downtime its config puts the worker in now,
// which the store does not hold.
type fleetReader struct {
	api.Reader
	fleet *fleet
	now   func() time.Time
}

func (r fleetReader) GetWorker(ctx context.Context, name string) (*drover.Worker, error) {
	w, err := r.Reader.GetWorker(ctx, name)
	if err != nil {
		return nil, err
	}
	r.fleet.withDowntime(w, r.now())
	return w, nil
}

func (r fleetReader) ListWorkers(ctx context.Context) ([]drover.Worker, error) {
	ws, err := r.Reader.ListWorkers(ctx)
	if err != nil {
		return nil, err
	}
	now := r.now()
	for i := range ws {
		r.fleet.withDowntime(&ws[i], now)
	}
	return ws, nil
}

// URL is the configured public URL, or the address the master is served at.
func (b *backend) URL() string {
	if u := b.cfg().Master.URL; u != "" {
		return strings.TrimRight(u, "/")
	}
	return b.servedAt
}

func (b *backend) Force(ctx context.Context, req *drover.BuildRequest) error {
	return b.changes.force(ctx, req)
}

func (b *backend) AddChange(ctx context.Context, c *drover.Change) error {
	return b.changes.addChange(ctx, c)
}

func (b *backend) CancelBuild(ctx context.Context, id int64, reason string) error {
	return b.runner.cancelBuild(ctx, id, reason)
}

func (b *backend) CancelRequest(ctx context.Context, id int64, reason string) error {
	return b.runner.cancelRequest(ctx, id, reason)
}

func (b *backend) Queue(ctx context.Context) ([]drover.QueueEntry, error) { return b.disp.queue(ctx) }
func (b *backend) Locks() []drover.LockState                              { return b.locks.states() }

func (b *backend) SetAvailability(ctx context.Context, worker string, a drover.Availability, reason, by string) error {
	return b.fleet.setAvailability(ctx, worker, a, reason, by)
}

func (b *backend) SetApproval(ctx context.Context, worker, approval, by string) error {
	return b.fleet.setApproval(ctx, worker, approval, by)
}

func (b *backend) ConfigStatus() api.ConfigStatus                   { return b.configs.state() }
func (b *backend) Site(ctx context.Context) (api.SiteStatus, error) { return b.site.status(ctx) }
func (b *backend) Reload(ctx context.Context) error                 { return b.reload(ctx) }

func (b *backend) Eligibility(ctx context.Context, builder string) ([]drover.Eligibility, error) {
	bl, ok := b.cfg().Builder(builder)
	if !ok {
		return nil, drover.Errorf(drover.NotFound, "no builder named %q", builder)
	}
	return b.fleet.eligibility(ctx, bl)
}

// Authenticate checks an API token and returns its role.
func (b *backend) Authenticate(ctx context.Context, token string) (drover.Role, error) {
	if token == "" {
		return "", drover.Errorf(drover.Unauthorized, "no token")
	}
	now := b.now()
	if t, ok := b.auth.Get(token, now); ok {
		return t.Role, nil
	}
	kind, id, secret, err := tokens.Parse(token)
	if err != nil {
		return "", err
	}
	if kind != drover.TokenAPI {
		return "", drover.Errorf(drover.Unauthorized, "not an API token")
	}
	t, err := b.reader.GetToken(ctx, id)
	if err != nil {
		if drover.KindOf(err) == drover.NotFound {
			return "", drover.Errorf(drover.Unauthorized, "unknown token")
		}
		return "", err
	}
	if err := tokens.Verify(t, secret, now); err != nil {
		b.logger.Warn("API token refused", "token", tokens.Redact(token), "err", err)
		return "", err
	}
	b.auth.Put(token, *t, now)
	return t.Role, nil
}

// ReadLog writes the stored bytes of log id from offset to w.
func (b *backend) ReadLog(ctx context.Context, id int64, offset int64, w io.Writer) error {
	if _, err := b.reader.GetLog(ctx, id); err != nil {
		return err
	}
	// Reads never repair a log, so one another master writes, or one left
	// by a crash that no master has taken over yet, is safe to read.
	_, err := b.logs.Copy(ctx, id, offset, w)
	if drover.KindOf(err) == drover.NotFound {
		return nil // indexed but nothing written yet (or expired): empty
	}
	return err
}

// FollowLog calls fn with the bytes of log id from offset, stored then
// live, until the log is complete or ctx is done.
func (b *backend) FollowLog(ctx context.Context, id int64, offset int64, fn func([]byte) error) error {
	l, err := b.reader.GetLog(ctx, id)
	if err != nil {
		return err
	}
	err = b.logs.Follow(ctx, id, offset, fn)
	if drover.KindOf(err) == drover.NotFound && l.Complete {
		return nil
	}
	return err
}

// OpenArtifact implements api.ArtifactFiles.
func (b *backend) OpenArtifact(ctx context.Context, id int64) (*drover.Artifact, *os.File, error) {
	a, err := b.reader.GetArtifact(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	p, err := workerhub.ArtifactFile(b.artifacts, a.BuildID, a.Path)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, drover.Errorf(drover.NotFound, "artifact %d (%s): its file is gone", id, a.Path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open artifact %d: %w", id, err)
	}
	return a, f, nil
}
