//go:build unix

package gitcheckout

import (
	"errors"
	"os/exec"
	"syscall"
)

// setProcessGroup runs git in a process group of its own, and makes a
// cancel kill the whole group: the ssh or git-remote-https it started
// too, which would otherwise hold its output open.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return err
	}
}
