package agent

import (
	"os"
	"runtime"
)

func osFacts() []string {
	out := []string{runtime.GOOS}
	for _, path := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		out = append(out, parseOSRelease(f)...)
		f.Close()
		break
	}
	return out
}

func memoryMiB() (uint64, bool) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	return parseMeminfo(f)
}
