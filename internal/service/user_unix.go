//go:build unix

package service

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/drover-ci/drover"
)

// EnsureUser makes sure the system user name exists, creating it as a
// system account with home directory home, no login shell and no home
// created (PrepareDir does that). It reports whether it created the user.
func EnsureUser(ctx context.Context, name, home string) (bool, error) {
	if _, err := user.Lookup(name); err == nil {
		return false, nil
	}
	shell := nologin()
	var argv []string
	switch runtime.GOOS {
	case "linux":
		if p, err := exec.LookPath("useradd"); err == nil {
			argv = []string{p, "--system", "--user-group", "--no-create-home", "--home-dir", home, "--shell", shell,
				"--comment", "Drover CI worker", name}
		} else if p, err := exec.LookPath("adduser"); err == nil {
			// BusyBox (Alpine): system user, no password, no home created.
			argv = []string{p, "-S", "-D", "-H", "-h", home, "-s", shell, "-g", "Drover CI worker", name}
		} else {
			return false, drover.Errorf(drover.Unavailable, "create user %s: neither useradd nor adduser is installed: create the user yourself, or pass --user \"\"", name)
		}
	case "freebsd", "dragonfly":
		argv = []string{"pw", "useradd", name, "-d", home, "-s", shell, "-c", "Drover CI worker"}
	default:
		return false, drover.Errorf(drover.Unavailable,
			"create user %s: not supported on %s: create the user yourself (on macOS: System Settings, or dscl) and pass --user NAME, or pass --user \"\" to run as %s",
			name, runtime.GOOS, currentUserName())
	}
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return false, fmt.Errorf("create user %s: %s: %w: %s", name, filepath.Base(argv[0]), err, strings.TrimSpace(string(out)))
	}
	// adduser -S puts the user in nogroup; the worker needs its own.
	if _, err := user.LookupGroup(name); err != nil && runtime.GOOS == "linux" {
		if _, err := exec.LookPath("addgroup"); err == nil {
			if out, err := exec.CommandContext(ctx, "addgroup", "-S", name).CombinedOutput(); err == nil {
				_ = exec.CommandContext(ctx, "addgroup", name, name).Run()
			} else {
				return true, fmt.Errorf("create group %s: %w: %s", name, err, strings.TrimSpace(string(out)))
			}
		}
	}
	return true, nil
}

// RemoveUser deletes the system user name (and its group, where the
// system's tools do so). It reports whether the user existed.
func RemoveUser(ctx context.Context, name string) (bool, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return false, nil
	}
	if u.Uid == "0" || u.Uid == strconv.Itoa(os.Getuid()) {
		return true, drover.Errorf(drover.Invalid, "refusing to remove user %s: it is root or the user running this command", name)
	}
	var argv []string
	switch runtime.GOOS {
	case "linux":
		if p, err := exec.LookPath("userdel"); err == nil {
			argv = []string{p, name}
		} else {
			argv = []string{"deluser", name}
		}
	case "freebsd", "dragonfly":
		argv = []string{"pw", "userdel", name}
	default:
		return true, drover.Errorf(drover.Unavailable, "remove user %s: not supported on %s: remove it yourself", name, runtime.GOOS)
	}
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return true, fmt.Errorf("remove user %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return true, nil
}

// nologin is the shell of an account nobody logs into.
func nologin() string {
	for _, p := range []string{"/usr/sbin/nologin", "/sbin/nologin"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/bin/false"
}

func currentUserName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "the current user"
}

// ids looks up a user's uid and primary gid.
func ids(name string) (*user.User, int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, 0, 0, drover.Errorf(drover.NotFound, "user %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	return u, uid, gid, nil
}

// PrepareDir creates the worker directory dir with mode 0750 and, when
// owner is set, gives it and everything in it to owner: a directory left
// by a run as root (the enrollment) must become the worker's.
func PrepareDir(dir, owner string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create worker directory: %w", err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		return fmt.Errorf("worker directory %s: %w", dir, err)
	}
	if owner == "" {
		return nil
	}
	_, uid, gid, err := ids(owner)
	if err != nil {
		return err
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) { // a build removed it meanwhile
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == gid {
			return nil
		}
		// Lchown: a symbolic link in a checkout must not give its target away.
		return os.Lchown(path, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("give worker directory %s to %s: %w", dir, owner, err)
	}
	return nil
}

// Command is the foreground equivalent of the service: the same command
// line, run as s.User when that is not the user running it.
func Command(ctx context.Context, s Spec) (*exec.Cmd, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, s.Executable, s.Arguments()...)
	cmd.Dir = s.Dir
	if s.User == "" {
		return cmd, nil
	}
	u, uid, gid, err := ids(s.User)
	if err != nil {
		return nil, err
	}
	if uid == os.Getuid() {
		return cmd, nil
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Env = append(os.Environ(), "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
	return cmd, nil
}

// IsPrivileged reports whether this process may create users and install
// system services.
func IsPrivileged() bool { return os.Geteuid() == 0 }
