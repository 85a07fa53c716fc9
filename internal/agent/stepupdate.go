package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

// A running command publishes links and properties of its step through
// the control socket, whose path it finds in its environment:
//
//	POST /step {command_id, kind: "url"|"property", name, value} → {ok: true}
//
// The worker keeps what each command published and sends it to the master
// as a StepUpdate, before the command's Finished. Updates are idempotent
// (they carry everything the command published so far), so after a
// reconnect the worker sends them again for every command it still holds:
// one lost with a broken stream is not lost for good.

// Environment variables every command gets.
const (
	EnvControl   = "DROVER_CONTROL"    // the worker's control socket
	EnvCommandID = "DROVER_COMMAND_ID" // the command's id, for POST /step
)

// Kinds of step update.
const (
	StepURL      = "url"
	StepProperty = "property"
)

// StepRequest is the body of POST /step.
type StepRequest struct {
	CommandID string `json:"command_id"`
	Kind      string `json:"kind"` // StepURL or StepProperty
	Name      string `json:"name"`
	Value     string `json:"value"`
}

// stepsFileName, in a command's directory, keeps what the command
// published, so that a restarted worker sends it again.
const stepsFileName = "steps.json"

// stepUpdates holds what each command published, to send to the master.
type stepUpdates struct {
	// saveMu serializes add-and-save, so that a command's file always
	// holds its latest updates.
	saveMu sync.Mutex

	mu   sync.Mutex
	cmds map[string]*published // by command id
}

// savedSteps is the content of stepsFileName.
type savedSteps struct {
	URLs       map[string]string `json:"urls,omitempty"`
	Properties map[string]string `json:"properties,omitempty"`
}

// published is one command's links and properties; dirty says they
// changed since last sent.
type published struct {
	urls, props map[string]string
	dirty       bool
}

// add records one update of command id and returns everything the
// command published so far.
func (u *stepUpdates) add(id, kind, name, value string) savedSteps {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cmds == nil {
		u.cmds = make(map[string]*published)
	}
	p := u.cmds[id]
	if p == nil {
		p = &published{urls: map[string]string{}, props: map[string]string{}}
		u.cmds[id] = p
	}
	m := p.urls
	if kind == StepProperty {
		m = p.props
	}
	if old, ok := m[name]; !ok || old != value {
		m[name] = value
		p.dirty = true
	}
	return savedSteps{URLs: cloneMap(p.urls), Properties: cloneMap(p.props)}
}

// restore sets what command id published before a worker restart; it is
// sent with the next stream.
func (u *stepUpdates) restore(id string, saved savedSteps) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cmds == nil {
		u.cmds = make(map[string]*published)
	}
	p := &published{urls: map[string]string{}, props: map[string]string{}, dirty: true}
	for k, v := range saved.URLs {
		p.urls[k] = v
	}
	for k, v := range saved.Properties {
		p.props[k] = v
	}
	u.cmds[id] = p
}

// recoverStepUpdates reads what the commands adopted from a previous
// worker process had published.
func (a *Agent) recoverStepUpdates() {
	a.mu.Lock()
	ids := make([]string, 0, len(a.cmds))
	for id := range a.cmds {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	for _, id := range ids {
		var saved savedSteps
		err := readJSON(filepath.Join(a.dir, runDirName, id, stepsFileName), &saved)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			a.log.Warn("step updates of a previous worker process lost", "command", id, "err", err)
		default:
			a.steps.restore(id, saved)
		}
	}
}

// take returns a StepUpdate for every command whose updates changed since
// the last take, forgetting the commands for which held is false.
func (u *stepUpdates) take(held func(id string) bool) []*workerproto.WorkerMessage {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []*workerproto.WorkerMessage
	ids := make([]string, 0, len(u.cmds))
	for id := range u.cmds {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := u.cmds[id]
		if !held(id) {
			delete(u.cmds, id)
			continue
		}
		if !p.dirty {
			continue
		}
		p.dirty = false
		up := &workerproto.StepUpdate{CommandId: id, Urls: cloneMap(p.urls), Properties: cloneMap(p.props)}
		out = append(out, &workerproto.WorkerMessage{Msg: &workerproto.WorkerMessage_StepUpdate{StepUpdate: up}})
	}
	return out
}

// resendAll marks every command's updates to be sent again: a new stream
// may follow one that lost them.
func (u *stepUpdates) resendAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, p := range u.cmds {
		if len(p.urls)+len(p.props) > 0 {
			p.dirty = true
		}
	}
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// holds reports whether the worker holds command id.
func (a *Agent) holds(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cmds[id] != nil
}

// takeStepUpdates returns the step updates to send now.
func (a *Agent) takeStepUpdates() []*workerproto.WorkerMessage {
	return a.steps.take(a.holds)
}

// commandEnv adds the control socket and the command id to a command's
// environment.
func (a *Agent) commandEnv(req *workerproto.RunCommand) {
	if req.Env == nil {
		req.Env = make(map[string]string, 2)
	}
	req.Env[EnvControl] = controlPath(a.dir)
	req.Env[EnvCommandID] = req.GetCommandId()
}

func (a *Agent) handleStep(w http.ResponseWriter, r *http.Request) {
	var req StepRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody))
	if err := dec.Decode(&req); err != nil {
		writeError(w, drover.Errorf(drover.Invalid, "decode request: %w", err))
		return
	}
	var err error
	switch req.Kind {
	case StepURL:
		err = drover.CheckStepURL(req.Name, req.Value)
	case StepProperty:
		err = drover.CheckStepProperty(req.Name, req.Value)
	default:
		err = drover.Errorf(drover.Invalid, "unknown kind %q (want %q or %q)", req.Kind, StepURL, StepProperty)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if req.CommandID == "" || !a.holds(req.CommandID) {
		writeError(w, drover.Errorf(drover.NotFound, "no command %q runs on this worker", req.CommandID))
		return
	}
	a.steps.saveMu.Lock()
	saved := a.steps.add(req.CommandID, req.Kind, req.Name, req.Value)
	// Saved before the answer: what a command was told is published
	// survives a worker restart.
	rd := filepath.Join(a.dir, runDirName, req.CommandID)
	if _, serr := os.Stat(rd); serr == nil {
		err = writeJSONFile(filepath.Join(rd, stepsFileName), saved)
	}
	a.steps.saveMu.Unlock()
	if err != nil {
		a.log.Error("save step updates", "command", req.CommandID, "err", err)
		writeError(w, fmt.Errorf("save step update: %w", err))
		return
	}
	a.log.Info("step update from a running command", "command", req.CommandID, "kind", req.Kind, "name", req.Name)
	a.notify()
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// publishProperty records a property that a command the agent carries
// out itself sets (a checkout's got_revision); it reaches the master as a
// StepUpdate before the command's Finished.
func (a *Agent) publishProperty(id, name, value string) {
	a.steps.saveMu.Lock()
	a.steps.add(id, StepProperty, name, value)
	a.steps.saveMu.Unlock()
	a.notify()
}

// PublishStep sends one update of a running command's step to the worker
// through its control socket, socket (the command's $DROVER_CONTROL):
// kind StepURL publishes a link name → value, StepProperty sets property
// name to value. It fails with Unavailable when no worker answers there,
// Invalid for a refused update and NotFound when the worker does not know
// the command.
func PublishStep(ctx context.Context, socket string, req StepRequest) error {
	return postControl(ctx, socket, "/step", controlTimeout, req, "step update")
}
