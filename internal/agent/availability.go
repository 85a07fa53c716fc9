package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/timewindow"
	"github.com/drover-ci/drover/internal/workerproto"
)

// A worker is lent by an owner who also uses the machine, so the owner
// decides when it builds: by hand (`drover worker availability`), by time
// windows (--available), and by a load-average ceiling (--max-load). The
// agent turns these into one effective availability, reports it in its
// hello and in FactsUpdate messages, and the master's dispatcher honours
// it. An operator's override on the master wins over all of this.

const (
	manualFileName = "availability.json"

	// availabilityEvery is how often the windows and the load are
	// re-evaluated: a window opens or closes within this much of its
	// minute, and a load spike must outlast it to be noticed.
	availabilityEvery = 15 * time.Second
	// defaultManualReason is the reason given for a manual setting made
	// without one.
	defaultManualReason = "set by the owner"
	// maxReasonLen bounds a manual reason: it is shown on the master's
	// pages, not a place for a novel.
	maxReasonLen = 500
)

// Source says which of the owner's settings decided an availability.
type Source string

const (
	SourceManual  Source = "manual"  // `drover worker availability STATE`
	SourceWindow  Source = "window"  // outside every --available window
	SourceLoad    Source = "load"    // the load average is above --max-load
	SourceDefault Source = "default" // nothing restricts the worker: eager
)

// Schedule is the owner's standing terms, given to `drover worker run` and
// remembered in the worker directory (worker.json).
type Schedule struct {
	// Windows are the times the worker builds, daily or weekly ("Mon-Fri
	// 09:00-17:00"); none means always.
	Windows []timewindow.Window `json:"windows,omitempty"`
	// Timezone is the IANA name the windows without a zone of their own
	// are read in; empty means the machine's local time.
	Timezone string `json:"timezone,omitempty"`
	// MaxLoad is a ceiling on the 1-minute load average; 0 means none.
	MaxLoad float64 `json:"max_load,omitempty"`
	// OverLoad is the availability above MaxLoad: reluctant (the default)
	// or offline.
	OverLoad drover.Availability `json:"over_load,omitempty"`
}

// IsZero reports whether s restricts nothing.
func (s Schedule) IsZero() bool {
	return len(s.Windows) == 0 && s.Timezone == "" && s.MaxLoad == 0 && s.OverLoad == ""
}

// location validates s and returns the zone its windows are read in.
func (s Schedule) location() (*time.Location, error) {
	if math.IsNaN(s.MaxLoad) || math.IsInf(s.MaxLoad, 0) || s.MaxLoad < 0 {
		return nil, drover.Errorf(drover.Invalid, "load ceiling %v: want a positive number, or 0 for none", s.MaxLoad)
	}
	switch s.OverLoad {
	case "", drover.Reluctant, drover.Offline:
	default:
		return nil, drover.Errorf(drover.Invalid, "availability over the load ceiling %q: want reluctant or offline", s.OverLoad)
	}
	for _, w := range s.Windows {
		if err := w.Valid(); err != nil {
			return nil, err
		}
	}
	if s.Timezone == "" {
		return time.Local, nil
	}
	return timewindow.LoadZone(s.Timezone)
}

// overLoad is the availability above the ceiling.
func (s Schedule) overLoad() drover.Availability {
	if s.OverLoad == "" {
		return drover.Reluctant
	}
	return s.OverLoad
}

// LoadSchedule returns the schedule stored in the worker directory dir, or
// a zero Schedule if there is none, so that `drover worker run` can change
// only the settings given on its command line.
func LoadSchedule(dir string) (Schedule, error) {
	st, err := loadState(dir)
	if err != nil {
		return Schedule{}, err
	}
	if st.Availability == nil {
		return Schedule{}, nil
	}
	return *st.Availability, nil
}

// ManualSetting is the owner's availability set by hand, which wins over
// the schedule until cleared with "auto".
type ManualSetting struct {
	Availability drover.Availability `json:"availability"`
	Reason       string              `json:"reason,omitempty"`
	SetAt        time.Time           `json:"set_at,omitzero"`
}

// loadManual reads DIR/availability.json; no file means no manual setting.
func loadManual(dir string) (*ManualSetting, error) {
	path := filepath.Join(dir, manualFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manual availability: %w", err)
	}
	var m ManualSetting
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, drover.Errorf(drover.Invalid, "parse %s: %w (fix it, or remove it with `drover worker availability auto`)", path, err)
	}
	if _, err := drover.ParseAvailability(string(m.Availability)); err != nil {
		return nil, drover.Errorf(drover.Invalid, "%s: %w", path, err)
	}
	return &m, nil
}

// saveManual writes DIR/availability.json atomically, or removes it when m
// is nil ("auto").
func saveManual(dir string, m *ManualSetting) error {
	path := filepath.Join(dir, manualFileName)
	if m == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("clear manual availability: %w", err)
		}
		return nil
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manual availability: %w", err)
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// parseManual validates what the owner asked for: a state or "auto" (nil).
func parseManual(state, reason string, now time.Time) (*ManualSetting, error) {
	if len(reason) > maxReasonLen {
		return nil, drover.Errorf(drover.Invalid, "reason is %d bytes; keep it under %d", len(reason), maxReasonLen)
	}
	if state == "auto" {
		if reason != "" {
			return nil, drover.Errorf(drover.Invalid, "a reason makes no sense with auto, which clears the manual setting")
		}
		return nil, nil
	}
	av, err := drover.ParseAvailability(state)
	if err != nil {
		return nil, drover.Errorf(drover.Invalid, "unknown availability %q (want eager, reluctant, draining, offline or auto)", state)
	}
	return &ManualSetting{Availability: av, Reason: strings.TrimSpace(reason), SetAt: now.UTC()}, nil
}

// settings is everything the effective availability depends on, but the
// clock and the load.
type settings struct {
	manual *ManualSetting
	sched  Schedule
	loc    *time.Location // nil means time.Local
}

// evaluate decides the effective availability: the manual setting if any;
// else offline outside every window (saying until when); else the load
// ceiling may turn eager into sched.OverLoad; else eager. loadErr set means the load is unknown,
// and the ceiling is ignored. It is pure, so that every rule is tested
// without a clock or a machine.
func evaluate(s settings, now time.Time, load float64, loadErr error) (drover.Availability, string, Source) {
	if m := s.manual; m != nil {
		reason := m.Reason
		if reason == "" {
			reason = defaultManualReason
		}
		return m.Availability, reason, SourceManual
	}
	if len(s.sched.Windows) > 0 {
		loc := s.loc
		if loc == nil {
			loc = time.Local
		}
		set := timewindow.Set{Windows: s.sched.Windows, Zone: loc}
		if !set.Contains(now) {
			reason := "outside " + set.String()
			if next := set.Next(now); !next.IsZero() {
				reason += " until " + timewindow.Until(now, next, set.Windows[0].Location(loc))
			}
			return drover.Offline, reason, SourceWindow
		}
	}
	if s.sched.MaxLoad > 0 && loadErr == nil && load > s.sched.MaxLoad {
		return s.sched.overLoad(), fmt.Sprintf("load %.2f above %s", load, strconv.FormatFloat(s.sched.MaxLoad, 'f', -1, 64)), SourceLoad
	}
	return drover.Eager, "", SourceDefault
}

// AvailabilityStatus is the worker's effective availability and the
// settings it comes from: the control socket's answer to GET /availability.
type AvailabilityStatus struct {
	Availability drover.Availability `json:"availability"`
	Reason       string              `json:"reason"`
	Source       Source              `json:"source"`
	Manual       *ManualSetting      `json:"manual"`
	Windows      []timewindow.Window `json:"windows"`
	Timezone     string              `json:"timezone"`
	MaxLoad      float64             `json:"max_load"`
	OverLoad     drover.Availability `json:"over_load"`
	// Load is the 1-minute load average last read, when a ceiling is set
	// and the load is known.
	Load *float64 `json:"load,omitempty"`
}

// Summary is the status in one line for people: "offline: outside
// 22:00-07:00 (time window)".
func (s AvailabilityStatus) Summary() string {
	var b strings.Builder
	b.WriteString(string(s.Availability))
	if s.Reason != "" {
		b.WriteString(": ")
		b.WriteString(s.Reason)
	}
	switch s.Source {
	case SourceManual:
		b.WriteString(" (set by hand; `auto` clears it)")
	case SourceWindow:
		b.WriteString(" (time window)")
	case SourceLoad:
		b.WriteString(" (load ceiling)")
	}
	return b.String()
}

// statusOf assembles an AvailabilityStatus.
func statusOf(s settings, av drover.Availability, reason string, src Source, load float64, loadErr error) AvailabilityStatus {
	st := AvailabilityStatus{
		Availability: av,
		Reason:       reason,
		Source:       src,
		Manual:       s.manual,
		Windows:      append([]timewindow.Window{}, s.sched.Windows...),
		Timezone:     s.sched.Timezone,
		MaxLoad:      s.sched.MaxLoad,
		OverLoad:     s.sched.overLoad(),
	}
	if st.Timezone == "" {
		st.Timezone = "local"
	}
	if s.sched.MaxLoad > 0 && loadErr == nil {
		st.Load = &load
	}
	return st
}

// loadSettings reads a worker directory's settings, for the owner's
// command when no worker is running there.
func loadSettings(dir string) (settings, error) {
	if _, err := os.Stat(filepath.Join(dir, stateFileName)); errors.Is(err, fs.ErrNotExist) {
		return settings{}, drover.Errorf(drover.NotFound, "no worker in %s (no %s): check --dir", dir, stateFileName)
	}
	sched, err := LoadSchedule(dir)
	if err != nil {
		return settings{}, err
	}
	loc, err := sched.location()
	if err != nil {
		return settings{}, fmt.Errorf("%s: %w", filepath.Join(dir, stateFileName), err)
	}
	m, err := loadManual(dir)
	if err != nil {
		return settings{}, err
	}
	return settings{manual: m, sched: sched, loc: loc}, nil
}

// availability is the agent's current effective availability, and a
// generation that grows with every change, so that each session's sender
// knows whether the master has heard the latest.
func (a *Agent) availability() (AvailabilityStatus, uint64) {
	a.availMu.Lock()
	defer a.availMu.Unlock()
	return a.avail, a.availGen
}

// reevaluate recomputes the effective availability now.
func (a *Agent) reevaluate() AvailabilityStatus {
	a.evalMu.Lock()
	defer a.evalMu.Unlock()
	return a.reevaluateLocked()
}

// reevaluateLocked recomputes the effective availability and, when it or
// its reason changed, wakes the sender to tell the master. The load is
// read with only evalMu held, so a slow sysctl never holds up a hello.
func (a *Agent) reevaluateLocked() AvailabilityStatus {
	a.availMu.Lock()
	s := a.settings
	a.availMu.Unlock()

	load, loadErr := 0.0, error(nil)
	if s.sched.MaxLoad > 0 {
		load, loadErr = a.loadAverage()
		switch {
		case loadErr != nil && !a.loadWarned:
			a.log.Warn("cannot read the load average; the load ceiling is ignored", "max_load", s.sched.MaxLoad, "err", loadErr)
			a.loadWarned = true
		case loadErr == nil && a.loadWarned:
			a.log.Info("load average readable again; the load ceiling applies", "load", load)
			a.loadWarned = false
		}
	}
	av, reason, src := evaluate(s, a.now(), load, loadErr)
	st := statusOf(s, av, reason, src, load, loadErr)

	a.availMu.Lock()
	changed := av != a.avail.Availability || reason != a.avail.Reason
	a.avail = st
	if changed {
		a.availGen++
	}
	a.availMu.Unlock()
	if changed {
		a.log.Info("availability", "availability", av, "reason", reason, "source", src)
		a.notify()
	}
	return st
}

// setManual applies and persists the owner's manual setting (nil clears
// it) and returns the resulting status. The file is written first: a
// setting that would not survive a restart is refused rather than half
// applied.
func (a *Agent) setManual(m *ManualSetting) (AvailabilityStatus, error) {
	a.evalMu.Lock()
	defer a.evalMu.Unlock()
	if err := saveManual(a.dir, m); err != nil {
		return AvailabilityStatus{}, err
	}
	a.availMu.Lock()
	a.settings.manual = m
	a.availMu.Unlock()
	if m == nil {
		a.log.Info("owner cleared the manual availability")
	} else {
		a.log.Info("owner set the availability", "availability", m.Availability, "reason", m.Reason)
	}
	return a.reevaluateLocked(), nil
}

// reloadManual re-reads the manual setting from disk. Run calls it once
// its control socket listens: the owner's command, finding no socket,
// writes the file and then tries the socket again, so a setting made while
// the worker starts is either read here or posted to the socket.
func (a *Agent) reloadManual() error {
	a.evalMu.Lock()
	defer a.evalMu.Unlock()
	m, err := loadManual(a.dir)
	if err != nil {
		return err
	}
	a.availMu.Lock()
	a.settings.manual = m
	a.availMu.Unlock()
	return nil
}

// watchAvailability re-evaluates the windows and the load every
// a.availEvery until ctx ends. Manual changes do not wait for it.
func (a *Agent) watchAvailability(ctx context.Context) {
	t := time.NewTicker(a.availEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.reevaluate()
		}
	}
}

// availabilityUpdate is the FactsUpdate telling the master of a new
// availability; its empty facts map means the facts did not change.
func availabilityUpdate(st AvailabilityStatus) *workerproto.WorkerMessage {
	return &workerproto.WorkerMessage{Msg: &workerproto.WorkerMessage_Facts{Facts: &workerproto.FactsUpdate{
		Availability:       string(st.Availability),
		AvailabilityReason: st.Reason,
	}}}
}
