package agent

import (
	"fmt"
	"os"
)

// systemLoadAverage is the 1-minute load average.
func systemLoadAverage() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, fmt.Errorf("read load average: %w", err)
	}
	return parseProcLoadavg(b)
}
