package master

import (
	"context"
	"maps"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
	"github.com/drover-ci/drover/internal/workerhub"
	pb "github.com/drover-ci/drover/internal/workerproto"
)

// published is what a running command published about its step through
// its worker (`drover step url`, `drover step property`). The command's
// mu guards it.
type published struct {
	urls  map[string]string
	props drover.Properties
}

// StepUpdate implements workerhub.Handler: it stores a running command's
// links on its step at once (and tells the build page), and keeps its
// properties for the build, which sets them when the step ends so that
// the later steps interpolate them. A link or property that breaks the
// rules is logged and dropped; the stream stays up, since what a build's
// command says is not the worker's fault. An update may come twice (a
// worker resends after a reconnect): applying it again changes nothing.
func (m *Master) StepUpdate(s *workerhub.Session, u *pb.StepUpdate) error {
	c, err := m.command(s, u.GetCommandId())
	if err != nil {
		return err
	}
	if c == nil {
		m.logger.Debug("step update for an unknown command dropped", "worker", s.Name, "command", u.GetCommandId())
		return nil
	}
	log := m.logger.With("worker", s.Name, "command", c.id, "build", c.run.GetBuildId(), "step", c.run.GetStep())
	ctx := context.WithoutCancel(m.ctx)
	changed := false
	for name, url := range u.GetUrls() {
		if err := drover.CheckStepURL(name, url); err != nil {
			log.Warn("link from a running command dropped", "name", name, "err", err)
			continue
		}
		c.mu.Lock()
		same := c.pub.urls[name] == url
		c.mu.Unlock()
		if same {
			continue
		}
		if err := m.store.SetStepURL(ctx, c.run.GetBuildId(), int(c.run.GetStep()), name, url); err != nil {
			log.Warn("link from a running command not stored", "name", name, "err", err)
			continue
		}
		c.mu.Lock()
		if c.pub.urls == nil {
			c.pub.urls = make(map[string]string)
		}
		c.pub.urls[name] = url
		c.mu.Unlock()
		changed = true
	}
	for key, value := range u.GetProperties() {
		if err := drover.CheckStepProperty(key, value); err != nil {
			log.Warn("property from a running command dropped", "err", err)
			continue
		}
		c.mu.Lock()
		if c.pub.props == nil {
			c.pub.props = make(drover.Properties)
		}
		c.pub.props[key] = value
		c.mu.Unlock()
	}
	if changed {
		m.bus.Publish(events.Event{Type: events.StepUpdated, BuildID: c.run.GetBuildId(), Step: int(c.run.GetStep()), Worker: s.Name})
	}
	return nil
}

// mergePublished adds the links the command published to st, so that
// writing st keeps them, and returns props with the command's published
// properties added (they win over those its output set).
func (c *command) mergePublished(st *drover.Step, props drover.Properties) drover.Properties {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pub.urls) > 0 {
		if st.URLs == nil {
			st.URLs = make(map[string]string, len(c.pub.urls))
		}
		maps.Copy(st.URLs, c.pub.urls)
	}
	if len(c.pub.props) > 0 {
		if props == nil {
			props = make(drover.Properties, len(c.pub.props))
		}
		maps.Copy(props, c.pub.props)
	}
	return props
}

// stepURLs interpolates a step's configured links as it starts; the
// links already on the step (a re-attached one's) are kept.
func stepURLs(spec *drover.StepSpec, st *drover.Step, props drover.Properties, facts drover.Facts) {
	if len(spec.URLs) == 0 {
		return
	}
	if st.URLs == nil {
		st.URLs = make(map[string]string, len(spec.URLs))
	}
	for name, tmpl := range spec.URLs {
		st.URLs[name] = interpolate(tmpl, props, facts)
	}
}
