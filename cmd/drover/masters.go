//go:build (darwin && (amd64 || arm64)) || (freebsd && (386 || amd64 || arm || arm64)) || (linux && (386 || amd64 || arm || arm64 || loong64 || ppc64le || riscv64 || s390x)) || (netbsd && amd64) || (openbsd && (amd64 || arm64)) || windows

package main

import "github.com/spf13/cobra"

// The master's commands build where its embedded store does: the list in
// the constraint above is where modernc.org/sqlite builds (its lib/), and
// workeronly.go is the rest. Keep the two constraints each other's
// negation.

// workerOnly tells that this build of drover has no master.
const workerOnly = false

// masterCmds are the commands that run a master or open its store.
func masterCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{masterCmd(g), checkconfigCmd(g), quickstartCmd(g), tokenCmd(g)}
}
