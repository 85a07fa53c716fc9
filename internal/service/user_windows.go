//go:build windows

package service

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/windows"

	"github.com/drover-ci/drover"
)

// EnsureUser is not supported on Windows: the service runs as
// LocalSystem, or as an account its owner made and names with --user.
func EnsureUser(ctx context.Context, name, home string) (bool, error) {
	return false, drover.Errorf(drover.Invalid,
		"creating user %s is not supported on Windows: pass --user \"\" to run the service as LocalSystem", name)
}

// RemoveUser is not supported on Windows; see EnsureUser.
func RemoveUser(ctx context.Context, name string) (bool, error) {
	return false, drover.Errorf(drover.Invalid, "removing user %s is not supported on Windows: remove it yourself", name)
}

// PrepareDir creates the worker directory; Windows ACLs are inherited from
// its parent, and owner is ignored.
func PrepareDir(dir, owner string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create worker directory: %w", err)
	}
	return nil
}

// Command is the foreground equivalent of the service, run as the current
// user.
func Command(ctx context.Context, s Spec) (*exec.Cmd, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	if s.User != "" {
		return nil, drover.Errorf(drover.Invalid, "running the worker as %s in the foreground is not supported on Windows: pass --user \"\"", s.User)
	}
	cmd := exec.CommandContext(ctx, s.Executable, s.Arguments()...)
	cmd.Dir = s.Dir
	return cmd, nil
}

// IsPrivileged reports whether this process runs elevated, as installing a
// service requires.
func IsPrivileged() bool { return windows.GetCurrentProcessToken().IsElevated() }
