//go:build darwin || freebsd

package agent

import (
	"context"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func osFacts() []string {
	if runtime.GOOS == "darwin" {
		return []string{runtime.GOOS, "macos"}
	}
	return []string{runtime.GOOS}
}

// memoryMiB asks sysctl for the physical memory, in bytes.
func memoryMiB() (uint64, bool) {
	name := "hw.physmem"
	if runtime.GOOS == "darwin" {
		name = "hw.memsize"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sysctl", "-n", name).Output()
	if err != nil {
		return 0, false
	}
	b, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return 0, false
	}
	return b >> 20, true
}
