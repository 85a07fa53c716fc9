package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/api"
	"github.com/drover-ci/drover/internal/testenv"
)

// counterScript counts, inside the commands themselves, how many hold a
// lock at once: it increments a counter under flock, records the peak,
// optionally checks that it is alone, works a little, and decrements.
const counterScript = `#!/bin/sh
# usage: count DIR [alone]
d=$1
flock "$d/f" sh -c '
  n=$(cat "$1/n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1/n"
  p=$(cat "$1/peak" 2>/dev/null || echo 0); [ $n -gt $p ] && echo $n > "$1/peak"
  if [ "$2" = alone ] && [ $n -ne 1 ]; then echo "not alone: $n" >> "$1/violations"; fi
' sh "$d" "$2"
sleep 0.3
flock "$d/f" sh -c 'n=$(cat "$1/n"); echo $((n-1)) > "$1/n"' sh "$d"
`

// A lock's holders never exceed its max, counted by the commands; an
// exclusive holder is alone; a worker-scoped step lock is per worker.
func TestLocksUnderContention(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "count")
	if err := os.WriteFile(script, []byte(counterScript), 0o755); err != nil {
		t.Fatal(err)
	}
	vmDir := filepath.Join(dir, "vm")
	if err := os.MkdirAll(vmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := testenv.StartMaster(t, fmt.Sprintf(`
vm = drover.lock("vm", max = 2)
gpu = drover.lock("gpu", max = 1, scope = "worker")
drover.builder(name = "vm", locks = [drover.use(vm)], steps = [drover.shell("%[1]s %[2]s")])
drover.builder(name = "vm-exclusive", locks = [drover.use(vm, exclusive = True)], steps = [drover.shell("%[1]s %[2]s alone")])
drover.builder(name = "gpu", steps = [
    drover.shell("echo preparing"),
    drover.shell("mkdir -p %[3]s/gpu-$DROVER_WORKER && %[1]s %[3]s/gpu-$DROVER_WORKER alone", name = "use-gpu", locks = [drover.use(gpu, exclusive = True)]),
])
`, script, vmDir, dir))
	for _, w := range []string{"w1", "w2", "w3"} {
		m.StartWorker(t, w, "--max-builds", "4")
	}
	var reqs []*drover.BuildRequest
	for i := 0; i < 10; i++ {
		b := "vm"
		if i == 3 || i == 7 {
			b = "vm-exclusive"
		}
		reqs = append(reqs, m.Force(t, b, api.ForceRequest{}))
	}
	for i := 0; i < 6; i++ {
		reqs = append(reqs, m.Force(t, "gpu", api.ForceRequest{}))
	}
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d := m.WaitBuild(t, r.ID, 3*time.Minute); d.Build.Result != drover.Success {
				t.Errorf("build %d of %s: %s (%s)", d.Build.ID, d.Build.Builder, d.Build.Result, d.Build.Summary)
			}
		}()
	}
	wg.Wait()
	peak := readInt(t, filepath.Join(vmDir, "peak"))
	if peak > 2 || peak < 2 {
		t.Errorf("vm lock: peak of %d holders counted by the commands, want exactly max = 2", peak)
	}
	if v, err := os.ReadFile(filepath.Join(vmDir, "violations")); err == nil {
		t.Errorf("exclusive holder was not alone: %s", v)
	}
	gpuDirs, _ := filepath.Glob(filepath.Join(dir, "gpu-*"))
	for _, d := range gpuDirs {
		if v, err := os.ReadFile(filepath.Join(d, "violations")); err == nil {
			t.Errorf("%s: %s", d, v)
		}
	}
	locks, err := m.Client.Locks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range locks {
		if len(l.Holders) != 0 || len(l.Waiters) != 0 {
			t.Errorf("lock %s still held after every build ended: %+v", l.Name, l)
		}
	}
}

func readInt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
