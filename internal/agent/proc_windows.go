//go:build windows

package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// setProcessGroup does nothing on Windows: there are no process groups to
// signal, so a command is stopped by killing its main process.
func setProcessGroup(*exec.Cmd) {}

// terminateGroup kills the command's main process; Windows has no SIGTERM.
func terminateGroup(p *os.Process) error {
	return killProcess(p)
}

// killGroup kills the command's main process.
func killGroup(p *os.Process) error {
	return killProcess(p)
}

func killProcess(p *os.Process) error {
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill process %d: %w", p.Pid, err)
	}
	return nil
}
