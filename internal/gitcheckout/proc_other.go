//go:build !unix

package gitcheckout

import "os/exec"

// setProcessGroup leaves git as it is: a cancel kills git itself (the
// default), and the wait for its output is bounded by WaitDelay.
func setProcessGroup(cmd *exec.Cmd) {}
