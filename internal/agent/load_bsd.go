//go:build darwin || freebsd

package agent

import (
	"context"
	"fmt"
	"os/exec"
	"time"
)

// sysctlTimeout bounds one load reading: a wedged sysctl must not stall
// the availability loop.
const sysctlTimeout = 2 * time.Second

// systemLoadAverage is the 1-minute load average, from sysctl(8): the
// vm.loadavg sysctl is a struct that only the command decodes portably
// without cgo.
func systemLoadAverage() (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sysctlTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sysctl", "-n", "vm.loadavg").Output()
	if err != nil {
		return 0, fmt.Errorf("sysctl -n vm.loadavg: %w", err)
	}
	return parseSysctlLoadavg(out)
}
