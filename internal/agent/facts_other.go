//go:build !linux && !darwin && !freebsd && !windows

package agent

import "runtime"

func osFacts() []string {
	return []string{runtime.GOOS}
}

// memoryMiB is unknown here; the fact is left out rather than guessed.
func memoryMiB() (uint64, bool) {
	return 0, false
}
