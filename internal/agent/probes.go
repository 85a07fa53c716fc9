package agent

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

// defaultProbeInterval is how often probes run again when the master does
// not say: often enough that an upgraded library shows within the hour,
// rarely enough that probes cost nothing.
const defaultProbeInterval = 30 * time.Minute

// maxProbeOutput bounds what a probe may print: facts are short values.
const maxProbeOutput = 64 << 10

// probeState is what the agent knows of the master's probes and their
// latest results. It survives reconnects, so a hello carries the facts of
// the last run.
type probeState struct {
	mu       sync.Mutex
	probes   []*workerproto.Probe
	interval time.Duration
	facts    drover.Facts // results of the last run
	gen      uint64       // grows with each run whose results differ
	changed  chan struct{}
}

func newProbeState() *probeState {
	return &probeState{interval: defaultProbeInterval, changed: make(chan struct{}, 1)}
}

// set replaces the probes and asks the runner to run them now.
func (p *probeState) set(probes []*workerproto.Probe, interval time.Duration) {
	p.mu.Lock()
	p.probes = probes
	if interval > 0 {
		p.interval = interval
	} else {
		p.interval = defaultProbeInterval
	}
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// results returns the latest probe facts and their generation.
func (p *probeState) results() (drover.Facts, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.facts, p.gen
}

// runProbes runs the probes now, whenever they change, and every interval,
// until ctx ends; wake is called after a run whose results differ.
func (a *Agent) runProbes(ctx context.Context, wake func()) {
	p := a.probes
	for {
		p.mu.Lock()
		probes, interval := p.probes, p.interval
		p.mu.Unlock()
		facts := drover.Facts{}
		for _, pr := range probes {
			if v := a.runProbe(ctx, pr); len(v) > 0 {
				facts[pr.GetName()] = v
			}
		}
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		if !sameFacts(p.facts, facts) {
			p.facts = facts
			p.gen++
			p.mu.Unlock()
			a.log.Info("probes ran", "facts", len(facts), "of", len(probes))
			wake()
		} else {
			p.mu.Unlock()
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-p.changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// runProbe runs one probe in its own process group and returns the
// non-empty lines it printed; nothing if it failed.
func (a *Agent) runProbe(ctx context.Context, pr *workerproto.Probe) []string {
	timeout := time.Duration(pr.GetTimeoutMs()) * time.Millisecond
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var cmd *exec.Cmd
	if runtime.GOOS == "windows" {
		cmd = exec.Command("cmd", "/c", pr.GetCommand())
	} else {
		cmd = exec.Command("sh", "-c", pr.GetCommand())
	}
	setProcessGroup(cmd)
	var out limitedBuffer
	out.max = maxProbeOutput
	cmd.Stdout = &out
	cmd.Dir = a.dir
	if err := cmd.Start(); err != nil {
		a.log.Warn("probe could not start", "probe", pr.GetName(), "err", err)
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = killGroup(cmd.Process)
		err = <-done
		a.log.Warn("probe timed out", "probe", pr.GetName(), "timeout", timeout)
		return nil
	}
	_ = killGroup(cmd.Process) // nothing it started may outlive it
	if err != nil {
		a.log.Debug("probe failed", "probe", pr.GetName(), "err", err)
		return nil
	}
	var values []string
	sc := bufio.NewScanner(bytes.NewReader(out.buf.Bytes()))
	for sc.Scan() {
		if v := strings.TrimSpace(sc.Text()); v != "" {
			values = append(values, v)
		}
	}
	return values
}

type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

func sameFacts(a, b drover.Facts) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || strings.Join(va, "\x00") != strings.Join(vb, "\x00") {
			return false
		}
	}
	return true
}

// allFacts are the facts a hello or a facts update carries: the built-in
// ones and the probes' results.
func (a *Agent) allFacts() map[string]*workerproto.FactValues {
	facts := make(map[string]*workerproto.FactValues)
	for k, v := range DetectFacts(a.cfg.Version) {
		facts[k] = &workerproto.FactValues{Values: v}
	}
	probed, _ := a.probes.results()
	for k, v := range probed {
		if _, builtin := facts[k]; !builtin {
			facts[k] = &workerproto.FactValues{Values: v}
		}
	}
	return facts
}
