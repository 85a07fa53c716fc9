package agent

import (
	"fmt"
	"strconv"
	"strings"
)

// parseProcLoadavg reads the 1-minute load average from Linux's
// /proc/loadavg: "0.52 0.58 0.59 1/467 12345".
func parseProcLoadavg(b []byte) (float64, error) {
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, fmt.Errorf("parse /proc/loadavg: empty")
	}
	return parseLoad(fields[0])
}

// parseSysctlLoadavg reads the 1-minute load average from the output of
// `sysctl -n vm.loadavg` on macOS and FreeBSD: "{ 1.92 1.81 1.77 }".
func parseSysctlLoadavg(b []byte) (float64, error) {
	s := strings.TrimSpace(string(b))
	s = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}"))
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return 0, fmt.Errorf("parse vm.loadavg %q: empty", b)
	}
	return parseLoad(fields[0])
}

func parseLoad(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("parse load average %q: not a number", s)
	}
	return v, nil
}
