//go:build unix && !aix

package agent

import "syscall"

const wnohang = syscall.WNOHANG
