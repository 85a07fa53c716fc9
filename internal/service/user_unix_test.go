//go:build unix

package service

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The test creates and removes a real system user, so it runs only as
// root on Linux with useradd, as in the project's test container.
func TestUserAndDir(t *testing.T) {
	if os.Geteuid() != 0 || runtime.GOOS != "linux" {
		t.Skip("needs root on Linux")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("needs useradd")
	}
	ctx := context.Background()
	name := fmt.Sprintf("drvtest%d", os.Getpid()%100000)
	tmp := t.TempDir()
	// The user must be able to reach its home, as under /var/lib.
	for _, d := range []string{filepath.Dir(tmp), tmp} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(tmp, "work")
	t.Cleanup(func() { _, _ = RemoveUser(context.Background(), name) })

	created, err := EnsureUser(ctx, name, home)
	if err != nil || !created {
		t.Fatalf("EnsureUser = %v, %v; want created", created, err)
	}
	u, err := user.Lookup(name)
	if err != nil || u.HomeDir != home {
		t.Fatalf("user %s: %+v, %v", name, u, err)
	}
	if created, err := EnsureUser(ctx, name, home); err != nil || created {
		t.Fatalf("second EnsureUser = %v, %v; want it found", created, err)
	}

	// A directory the enrollment left as root becomes the worker's.
	if err := os.MkdirAll(filepath.Join(home, "builder"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "worker.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(home, "link")); err != nil {
		t.Fatal(err)
	}
	if err := PrepareDir(home, name); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(home)
	if err != nil || info.Mode().Perm() != 0o750 {
		t.Fatalf("worker directory mode: %v, %v", info.Mode(), err)
	}
	for _, p := range []string{"", "builder", "worker.json", "link"} {
		fi, err := os.Lstat(filepath.Join(home, p))
		if err != nil {
			t.Fatal(err)
		}
		if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != u.Uid {
			t.Errorf("%s owned by uid %s, want %s", p, uid, u.Uid)
		}
	}
	if fi, _ := os.Stat("/etc/passwd"); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatal("PrepareDir followed a symbolic link out of the worker directory")
	}

	// The foreground worker runs as that user.
	cmd, err := Command(ctx, Spec{Executable: "/usr/bin/id", Dir: home, User: name})
	if err != nil {
		t.Fatal(err)
	}
	cmd.Args = []string{"/usr/bin/id", "-u"}
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != u.Uid {
		t.Errorf("id -u as %s = %q, %v; want %s", name, out, err, u.Uid)
	}

	existed, err := RemoveUser(ctx, name)
	if err != nil || !existed {
		t.Fatalf("RemoveUser = %v, %v", existed, err)
	}
	if existed, err := RemoveUser(ctx, name); err != nil || existed {
		t.Fatalf("second RemoveUser = %v, %v; want nothing to do", existed, err)
	}
}

func TestRemoveUserRefusesRoot(t *testing.T) {
	if _, err := user.Lookup("root"); err != nil {
		t.Skip("no root user")
	}
	if existed, err := RemoveUser(context.Background(), "root"); err == nil || !existed {
		t.Fatalf("RemoveUser(root) = %v, %v; want a refusal", existed, err)
	}
}
