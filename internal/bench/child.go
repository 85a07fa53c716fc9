package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drover-ci/drover/internal/mastertest"
)

// FleetChildEnv, set to "1" in a process's environment, tells it to run
// as a fleet child: main (or TestMain) calls RunFleetChild.
const FleetChildEnv = "DROVER_BENCH_FLEET_CHILD"

// childSpec is what the parent sends a fleet child on its stdin.
type childSpec struct {
	Addr  string            `json:"addr"`
	Creds []mastertest.Cred `json:"creds"`
}

// childReport is one line a fleet child writes on its stdout.
type childReport struct {
	Connected int `json:"connected"`
}

// RunFleetChild runs a simulated fleet for a parent bench process: it
// reads a spec line from stdin, connects the workers it names, writes a
// JSON line {"connected": N} whenever that number changes, and stops when
// stdin closes or ctx ends.
func RunFleetChild(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "drover-bench fleet child: raise open-file limit:", err)
	}
	in := bufio.NewReader(stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read fleet spec: %w", err)
	}
	var spec childSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fmt.Errorf("decode fleet spec: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := mastertest.StartFleet(ctx, spec.Addr, spec.Creds, mastertest.Behavior{}, slog.New(slog.DiscardHandler))
	defer f.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { // stdin closing is the parent's stop signal
		_, _ = io.Copy(io.Discard, in)
		cancel()
	})
	enc := json.NewEncoder(stdout)
	last := -1
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if n := f.Connected(); n != last {
			if err := enc.Encode(childReport{Connected: n}); err != nil {
				return fmt.Errorf("report to parent: %w", err)
			}
			last = n
		}
		select {
		case <-ctx.Done():
			return nil
		case <-f.Changed():
		case <-tick.C:
		}
	}
}

// childFleet is the parent's handle on a fleet child process.
type childFleet struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	connected atomic.Int64
	changed   chan struct{}
	readDone  chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// startChildFleet starts argv as a fleet child connecting creds to addr.
func startChildFleet(ctx context.Context, argv []string, addr string, cs []mastertest.Cred) (*childFleet, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), FleetChildEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("fleet child stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("fleet child stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start fleet child: %w", err)
	}
	c := &childFleet{cmd: cmd, stdin: stdin, changed: make(chan struct{}, 1), readDone: make(chan struct{})}
	go func() { // owned: ends when the child's stdout closes, which Close waits for
		defer close(c.readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r childReport
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				c.connected.Store(int64(r.Connected))
				select {
				case c.changed <- struct{}{}:
				default:
				}
			}
		}
	}()
	spec, err := json.Marshal(childSpec{Addr: addr, Creds: cs})
	if err == nil {
		_, err = stdin.Write(append(spec, '\n'))
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("send fleet spec: %w", err)
	}
	return c, nil
}

// Connected is the child's last reported count of connected workers.
func (c *childFleet) Connected() int { return int(c.connected.Load()) }

func (c *childFleet) WaitConnected(ctx context.Context, n int) error {
	for c.Connected() != n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d workers (have %d): %w", n, c.Connected(), ctx.Err())
		case <-c.readDone:
			return errors.New("fleet child exited")
		case <-c.changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// rss is the child's resident memory.
func (c *childFleet) rss() (uint64, error) { return readRSS(c.cmd.Process.Pid) }

// Close tells the child to stop, kills it if it does not within a
// bound, and waits for it. It is idempotent.
func (c *childFleet) Close() error {
	c.closeOnce.Do(func() {
		c.stdin.Close()
		t := time.AfterFunc(30*time.Second, func() { _ = c.cmd.Process.Kill() })
		defer t.Stop()
		<-c.readDone
		c.closeErr = c.cmd.Wait()
	})
	return c.closeErr
}

// readRSS reads a process's resident set size from /proc (Linux).
func readRSS(pid int) (uint64, error) { return readStatus(pid, "VmRSS") }

// readStatus reads a size in kB from a process's /proc status (Linux):
// VmRSS, or its parts RssAnon (the process's own memory) and RssFile
// (pages of files it maps, its executable's mostly, shared with every
// other process mapping them and reclaimable by the kernel).
func readStatus(pid int, key string) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status of process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s of process %d: %w", key, pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("process %d: no %s", pid, key)
}

// terminate asks a process to stop as a service manager would.
func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }
