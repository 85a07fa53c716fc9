//go:build !((darwin && (amd64 || arm64)) || (freebsd && (386 || amd64 || arm || arm64)) || (linux && (386 || amd64 || arm || arm64 || loong64 || ppc64le || riscv64 || s390x)) || (netbsd && amd64) || (openbsd && (amd64 || arm64)) || windows)

package main

import "github.com/spf13/cobra"

// On these platforms the master's embedded store does not build, so
// drover is the worker and the client commands only (see masters.go):
// a worker here connects to a master that runs elsewhere.

const workerOnly = true

func masterCmds(*globals) []*cobra.Command { return nil }
