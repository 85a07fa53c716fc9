//go:build !linux && !darwin && !freebsd

package agent

import (
	"runtime"

	"github.com/drover-ci/drover"
)

// systemLoadAverage is unknown here (Windows has no load average): the
// load ceiling is ignored, with a warning.
func systemLoadAverage() (float64, error) {
	return 0, drover.Errorf(drover.Unavailable, "no load average on %s", runtime.GOOS)
}
