package agent

import (
	"bufio"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/drover-ci/drover"
)

// archNames is Go's name for an architecture and the other names people
// write for it, so a builder may require "x86_64" as well as "amd64".
func archNames(goarch string) []string {
	switch goarch {
	case "amd64":
		return []string{goarch, "x86_64"}
	case "arm64":
		return []string{goarch, "aarch64"}
	case "386":
		return []string{goarch, "i386", "x86"}
	}
	return []string{goarch}
}

// DetectFacts returns the built-in facts of this machine.
func DetectFacts(version string) drover.Facts {
	f := drover.Facts{
		"os":   osFacts(),
		"arch": archNames(runtime.GOARCH),
		"cpus": {strconv.Itoa(runtime.NumCPU())},
	}
	if mib, ok := memoryMiB(); ok {
		f["memory"] = []string{strconv.FormatUint(mib, 10)}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		f["hostname"] = []string{h}
	}
	if version != "" {
		f["drover_version"] = []string{version}
	}
	return f
}

// parseOSRelease reads an os-release(5) file and returns the
// distribution's facts: its ID and ID-<major version>, e.g. "debian",
// "debian-12". A rolling release (no VERSION_ID) gives only its ID.
func parseOSRelease(r io.Reader) []string {
	var id, ver string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = strings.ToLower(v)
		case "VERSION_ID":
			ver = v
		}
	}
	if id == "" {
		return nil
	}
	out := []string{id}
	if major, _, _ := strings.Cut(ver, "."); major != "" {
		out = append(out, id+"-"+major)
	}
	return out
}

// parseMeminfo reads /proc/meminfo and returns MemTotal in MiB.
func parseMeminfo(r io.Reader) (uint64, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, false
			}
			return kb / 1024, true
		}
	}
	return 0, false
}
