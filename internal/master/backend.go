package master

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/tokens"
)

// The master is the API's and web UI's backend.
var _ api.Backend = (*Master)(nil)

// Builders implements api.Backend.
func (m *Master) Builders() []drover.Builder { return m.config().Builders }

// Builder implements api.Backend.
func (m *Master) Builder(name string) (*drover.Builder, bool) {
	cfg := m.config()
	for i := range cfg.Builders {
		if cfg.Builders[i].Name == name {
			return &cfg.Builders[i], true
		}
	}
	return nil, false
}

// Title implements api.Backend.
func (m *Master) Title() string { return m.config().Master.Title }

// URL implements api.Backend: the configured public URL, or the address
// the master listens on.
func (m *Master) URL() string {
	if u := m.config().Master.URL; u != "" {
		return strings.TrimRight(u, "/")
	}
	return "http://" + m.HTTPAddr()
}

// Events implements api.Backend.
func (m *Master) Events() *events.Subscription { return m.bus.Subscribe() }

// ReadLog implements api.Backend.
func (m *Master) ReadLog(ctx context.Context, id int64, offset int64, w io.Writer) error {
	l, err := m.store.GetLog(ctx, id)
	if err != nil {
		return err
	}
	if m.foreignLog(ctx, l) {
		_, err = m.logs.CopyShared(ctx, id, offset, w)
	} else {
		_, err = m.logs.Copy(ctx, id, offset, w)
	}
	if drover.KindOf(err) == drover.NotFound {
		return nil // indexed but nothing written yet (or expired): empty
	}
	return err
}

// FollowLog implements api.Backend.
func (m *Master) FollowLog(ctx context.Context, id int64, offset int64, fn func([]byte) error) error {
	l, err := m.store.GetLog(ctx, id)
	if err != nil {
		return err
	}
	if m.foreignLog(ctx, l) {
		err = m.logs.FollowShared(ctx, id, offset, sharedLogPoll, fn)
	} else {
		err = m.logs.Follow(ctx, id, offset, fn)
	}
	if drover.KindOf(err) == drover.NotFound && l.Complete {
		return nil
	}
	return err
}

// sharedLogPoll is how often a log another master writes is looked at
// for new output: about as often as its writer flushes.
const sharedLogPoll = 250 * time.Millisecond

// foreignLog tells whether another master of the site writes log l: it
// must then be read without being touched, and followed by polling.
func (m *Master) foreignLog(ctx context.Context, l *drover.Log) bool {
	if !m.shared || l.Complete {
		return false
	}
	b, err := m.store.GetBuild(ctx, l.BuildID)
	return err == nil && b.State == drover.BuildRunning && b.Master != m.id && b.Master != ""
}

// Force implements api.Backend.
func (m *Master) Force(ctx context.Context, req *drover.BuildRequest) error {
	b, ok := m.Builder(req.Builder)
	if !ok {
		return drover.Errorf(drover.NotFound, "no builder named %q", req.Builder)
	}
	if req.Source.Repository == "" {
		if src := firstSource(b); src != nil {
			req.Source.Repository = src.URL
			if req.Source.Branch == "" && req.Source.Revision == "" && len(src.Branches) > 0 {
				req.Source.Branch = src.Branches[0]
			}
		}
	}
	if req.Priority == 0 {
		req.Priority = b.Priority
	}
	if req.Reason == "" {
		req.Reason = "forced"
	}
	if err := m.store.AddRequests(ctx, []*drover.BuildRequest{req}); err != nil {
		return fmt.Errorf("force %s: %w", req.Builder, err)
	}
	m.logger.Info("build forced", "builder", req.Builder, "request", req.ID, "reason", req.Reason)
	m.bus.Publish(events.Event{Type: events.RequestAdded, Builder: req.Builder, Request: req.ID})
	m.kick()
	return nil
}

func firstSource(b *drover.Builder) *drover.GitSource {
	for _, s := range b.Steps {
		if s.Kind == drover.StepCheckout && s.Source != nil {
			return s.Source
		}
	}
	return nil
}

// AddChange implements api.Backend.
func (m *Master) AddChange(ctx context.Context, c *drover.Change) error {
	if c.Repository == "" || c.Branch == "" || c.Revision == "" {
		return drover.Errorf(drover.Invalid, "a change needs a repository, a branch and a revision")
	}
	if c.When.IsZero() {
		c.When = m.now()
	}
	if err := m.store.AddChange(ctx, c); err != nil {
		return fmt.Errorf("add change: %w", err)
	}
	m.bus.Publish(events.Event{Type: events.ChangeAdded})
	select {
	case m.changes <- []*drover.Change{c}:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// addChanges stores changes from a poller and hands them to the schedulers.
func (m *Master) addChanges(ctx context.Context, cs []*drover.Change) {
	var stored []*drover.Change
	for _, c := range cs {
		if err := m.store.AddChange(ctx, c); err != nil {
			m.logger.Error("store change", "repository", c.Repository, "revision", c.Revision, "err", err)
			continue
		}
		stored = append(stored, c)
	}
	if len(stored) == 0 {
		return
	}
	m.bus.Publish(events.Event{Type: events.ChangeAdded})
	select {
	case m.changes <- stored:
	case <-ctx.Done():
	}
}

// CancelRequest implements api.Backend.
func (m *Master) CancelRequest(ctx context.Context, id int64, reason string) error {
	if reason == "" {
		reason = "cancelled by request"
	}
	req, err := m.store.GetRequest(ctx, id)
	if err != nil {
		return err
	}
	if req.State == drover.RequestClaimed {
		builds, err := m.store.ListBuilds(ctx, drover.BuildFilter{RequestID: id, State: drover.BuildRunning})
		if err != nil {
			return err
		}
		for _, b := range builds {
			return m.CancelBuild(ctx, b.ID, reason)
		}
	}
	if err := m.store.CancelRequest(ctx, id, reason); err != nil {
		return err
	}
	m.bus.Publish(events.Event{Type: events.RequestChanged, Builder: req.Builder, Request: id})
	return nil
}

// Eligibility implements api.Backend.
func (m *Master) Eligibility(ctx context.Context, builder string) ([]drover.Eligibility, error) {
	b, ok := m.Builder(builder)
	if !ok {
		return nil, drover.Errorf(drover.NotFound, "no builder named %q", builder)
	}
	workers, err := m.store.ListWorkers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]drover.Eligibility, 0, len(workers))
	for _, w := range workers {
		facts := w.Facts
		if s, ok := m.hub.Session(w.Name); ok {
			facts = m.facts(s)
		} else {
			facts = facts.Merge(labelFacts(w.Labels)).Merge(m.config().WorkerFacts(w.Name))
		}
		e := drover.CheckEligibility(b, w.Name, facts)
		if _, ok := m.hub.Session(w.Name); !ok {
			e.Reasons = append(e.Reasons, "not connected now")
		}
		out = append(out, e)
	}
	return out, nil
}

func labelFacts(labels drover.Properties) drover.Facts {
	f := drover.Facts{}
	for k, v := range labels {
		f[k] = []string{v}
	}
	return f
}

// Authenticate implements api.Backend.
func (m *Master) Authenticate(ctx context.Context, token string) (drover.Role, error) {
	if token == "" {
		return "", drover.Errorf(drover.Unauthorized, "no token")
	}
	now := m.now()
	if t, ok := m.auth.Get(token, now); ok {
		return t.Role, nil
	}
	kind, id, secret, err := tokens.Parse(token)
	if err != nil {
		return "", err
	}
	if kind != drover.TokenAPI {
		return "", drover.Errorf(drover.Unauthorized, "not an API token")
	}
	t, err := m.store.GetToken(ctx, id)
	if err != nil {
		if drover.KindOf(err) == drover.NotFound {
			return "", drover.Errorf(drover.Unauthorized, "unknown token")
		}
		return "", err
	}
	if err := tokens.Verify(t, secret, now); err != nil {
		m.logger.Warn("API token refused", "token", tokens.Redact(token), "err", err)
		return "", err
	}
	m.auth.Put(token, *t, now)
	return t.Role, nil
}

// SetAvailability implements api.Backend.
func (m *Master) SetAvailability(ctx context.Context, worker string, a drover.Availability, reason, by string) error {
	var o *drover.AvailabilityOverride
	if a != "" {
		if _, err := drover.ParseAvailability(string(a)); err != nil {
			return err
		}
		o = &drover.AvailabilityOverride{Availability: a, Reason: reason, By: by, At: m.now()}
	}
	if err := m.store.SetAvailabilityOverride(ctx, worker, o); err != nil {
		return err
	}
	m.mu.Lock()
	if o == nil {
		delete(m.overrides, worker)
	} else {
		m.overrides[worker] = *o
	}
	m.mu.Unlock()
	m.logger.Debug("worker availability set", "worker", worker, "availability", a, "reason", reason, "by", by)
	m.bus.Publish(events.Event{Type: events.WorkerChanged, Worker: worker})
	m.kick()
	return nil
}

// Reader implements api.Backend.
func (m *Master) Reader() api.Reader { return m.store }
