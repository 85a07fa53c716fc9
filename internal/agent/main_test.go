package agent

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary stand in for `drover __supervise DIR`:
// the agent under test starts os.Executable() as its supervisor.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "__supervise" {
		if err := Supervise(context.Background(), os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// The supervisors are this binary: with the race detector, each would
	// sleep a second on exit by default, and stopping a worker waits for
	// its supervisors to exit.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}
