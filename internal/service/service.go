// Package service installs a Drover worker as a system service that starts
// at boot and is restarted when it fails: a systemd unit on Linux, a
// launchd daemon on macOS, an rc.d script on FreeBSD, a Windows service.
// It is what `drover worker join` and `drover worker uninstall` use, on
// top of github.com/kardianos/service.
//
// The service definition is a pure function of a Spec (Config,
// SystemdUnit), so it can be checked without installing anything. Install
// is idempotent: it records the definition it installed in the worker
// directory and, when run again, rewrites the service only if the
// definition changed, and starts it if it is not running.
//
// Only a running init system is used. A container usually has the files of
// one (systemctl, /etc/init.d) but no init process to run services, and a
// unit written there would never start; DetectInit reports that instead.
package service

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	kservice "github.com/kardianos/service"

	"github.com/drover-ci/drover"
)

// Name is the service's name in the init system.
const Name = "drover-worker"

// definitionFile, in the worker directory, holds the digest of the service
// definition last installed, so that a second join knows whether the
// installed service is already the one wanted.
const definitionFile = ".service-definition"

// restartDelay is how long the init system waits before restarting a
// worker that exited: long enough not to spin on a persistent failure,
// short enough that a crash costs the fleet little.
const restartDelay = "5s"

// Spec is what the service runs.
type Spec struct {
	Executable string   // absolute path of the drover binary
	Dir        string   // absolute path of the worker directory
	User       string   // system user the worker runs as; "" for the init system's default (root, LocalSystem)
	Args       []string // further arguments of `worker run`, such as --label k=v
}

// Arguments is the command line the service runs, after the executable.
func (s Spec) Arguments() []string {
	return append([]string{"worker", "run", "--dir", s.Dir}, s.Args...)
}

func (s Spec) validate() error {
	if !filepath.IsAbs(s.Executable) {
		return drover.Errorf(drover.Invalid, "service executable %q: not an absolute path", s.Executable)
	}
	if !filepath.IsAbs(s.Dir) {
		return drover.Errorf(drover.Invalid, "worker directory %q: not an absolute path", s.Dir)
	}
	// kardianos renders every service file through its template engine,
	// which would read these as actions.
	for _, a := range append([]string{s.Executable, s.User}, s.Arguments()...) {
		if strings.Contains(a, "{{") || strings.Contains(a, "\n") {
			return drover.Errorf(drover.Invalid, "service argument %q: may not contain \"{{\" or a newline", a)
		}
	}
	return nil
}

// Config is the kardianos service definition of s, for every platform.
func Config(s Spec) (*kservice.Config, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	c := &kservice.Config{
		Name:             Name,
		DisplayName:      "Drover CI worker",
		Description:      "Drover CI worker: builds for its master, in " + s.Dir,
		UserName:         s.User,
		Executable:       s.Executable,
		Arguments:        s.Arguments(),
		WorkingDirectory: s.Dir,
		Option: kservice.KeyValue{
			// systemd (used by the stock templates of the other inits too).
			"Restart": "always",
			// The unit is ours, not kardianos's, for a short RestartSec and
			// network ordering; see SystemdUnit.
			"SystemdScript": SystemdUnit(s),
			// launchd: start at boot, and again whenever it exits.
			"RunAtLoad": true,
			"KeepAlive": true,
			// Windows service recovery.
			"OnFailure":              "restart",
			"OnFailureDelayDuration": restartDelay,
			"OnFailureResetPeriod":   3600,
			"StartType":              "automatic",
		},
	}
	if runtime.GOOS == "windows" {
		// The Windows service manager has no working directory setting.
		c.WorkingDirectory = ""
	}
	return c, nil
}

// SystemdUnit is the systemd unit file of s.
func SystemdUnit(s Spec) string {
	var b strings.Builder
	b.WriteString("[Unit]\n")
	b.WriteString("Description=Drover CI worker (" + s.Dir + ")\n")
	b.WriteString("Documentation=https://github.com/drover-ci/drover\n")
	// The worker dials out to its master: wait for the network, but do not
	// fail without it (the worker retries with backoff).
	b.WriteString("Wants=network-online.target\n")
	b.WriteString("After=network-online.target\n")
	// Restart forever: a worker whose master is down for a day must still
	// come back without a person.
	b.WriteString("StartLimitIntervalSec=0\n")
	b.WriteString("\n[Service]\n")
	b.WriteString("Type=simple\n")
	b.WriteString("ExecStart=" + systemdQuote(s.Executable))
	for _, a := range s.Arguments() {
		b.WriteString(" " + systemdQuote(a))
	}
	b.WriteString("\n")
	b.WriteString("WorkingDirectory=" + systemdQuote(s.Dir) + "\n")
	if s.User != "" {
		b.WriteString("User=" + s.User + "\n")
	}
	b.WriteString("Restart=always\n")
	b.WriteString("RestartSec=" + restartDelay + "\n")
	// The worker kills its commands' process groups when it stops; give it
	// the time to do so before systemd kills what remains.
	b.WriteString("TimeoutStopSec=30\n")
	// Only the worker itself is signalled: its commands run under their own
	// supervisors, which must outlive a worker that crashed or is being
	// restarted, so that the new worker adopts them (a worker stopped on
	// purpose stops its commands itself).
	b.WriteString("KillMode=process\n")
	b.WriteString("\n[Install]\n")
	b.WriteString("WantedBy=multi-user.target\n")
	return b.String()
}

// systemdQuote quotes one word of an ExecStart line: systemd splits on
// spaces, expands % specifiers and $ variables, and reads backslash
// escapes inside double quotes.
func systemdQuote(s string) string {
	s = strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// digest identifies a definition, to compare with what was installed.
func digest(c *kservice.Config) string {
	b, err := json.Marshal(struct {
		Name, User, Exe, Dir string
		Args                 []string
		Unit                 any
	}{c.Name, c.UserName, c.Executable, c.WorkingDirectory, c.Arguments, c.Option["SystemdScript"]})
	if err != nil { // strings only: cannot happen
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Init is the init system that manages the service.
type Init struct {
	sys kservice.System
}

// String names the init system: "systemd", "launchd", …
func (i Init) String() string {
	name := i.sys.String()
	for _, p := range []string{"linux-", "darwin-", "unix-"} {
		name = strings.TrimPrefix(name, p)
	}
	return name
}

// ErrNoInit is the error of DetectInit when no init system runs here.
var ErrNoInit = drover.Errorf(drover.Unavailable, "no init system found (a container?)")

// DetectInit finds the running init system, or returns ErrNoInit.
func DetectInit() (Init, error) {
	return detect(runtime.GOOS, exists, kservice.AvailableSystems(), kservice.ChosenSystem())
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// runningMark is the path that exists only while the named kardianos
// system runs as init (the check systemd's own sd_booted does), or "".
func runningMark(system string) string {
	switch system {
	case "linux-systemd":
		return "/run/systemd/system"
	case "linux-openrc":
		return "/run/openrc/softlevel"
	}
	return ""
}

// detect picks the init system; on Linux only one that runs, since
// kardianos would pick System V init from a mere /etc/init.d.
func detect(goos string, exists func(string) bool, available []kservice.System, chosen kservice.System) (Init, error) {
	if goos != "linux" {
		if chosen == nil {
			return Init{}, ErrNoInit
		}
		return Init{sys: chosen}, nil
	}
	for _, sys := range available {
		if p := runningMark(sys.String()); p != "" && exists(p) {
			return Init{sys: sys}, nil
		}
	}
	return Init{}, ErrNoInit
}

// noProgram satisfies kardianos's Interface, which only Run uses; this
// package installs and controls the service, it never runs as one.
type noProgram struct{}

func (noProgram) Start(kservice.Service) error { return nil }
func (noProgram) Stop(kservice.Service) error  { return nil }

// Outcome is what Install did.
type Outcome struct {
	Installed bool // the definition was written (new or changed)
	Started   bool // the service was started or restarted
}

// Install installs the service of s under init, or updates it when its
// definition changed (restarting it if it ran), and starts it if it is not
// running. It records the definition in s.Dir.
func Install(init Init, s Spec) (Outcome, error) {
	var out Outcome
	cfg, err := Config(s)
	if err != nil {
		return out, err
	}
	svc, err := init.sys.New(noProgram{}, cfg)
	if err != nil {
		return out, fmt.Errorf("service %s under %s: %w", Name, init, err)
	}
	want := digest(cfg)
	marker := filepath.Join(s.Dir, definitionFile)
	have, err := os.ReadFile(marker)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return out, fmt.Errorf("read installed service definition: %w", err)
	}
	status, serr := svc.Status()
	installed := !errors.Is(serr, kservice.ErrNotInstalled)
	running := serr == nil && status == kservice.StatusRunning

	if !installed || strings.TrimSpace(string(have)) != want {
		if installed {
			if err := svc.Uninstall(); err != nil {
				return out, fmt.Errorf("remove the old definition of service %s: %w", Name, err)
			}
		}
		if err := svc.Install(); err != nil {
			return out, fmt.Errorf("install service %s under %s: %w", Name, init, err)
		}
		out.Installed = true
		if err := os.WriteFile(marker, []byte(want+"\n"), 0o644); err != nil {
			return out, fmt.Errorf("record installed service definition: %w", err)
		}
		if running {
			// The old definition still runs: the new one takes effect only
			// on a restart.
			if err := svc.Restart(); err != nil {
				return out, fmt.Errorf("restart service %s: %w", Name, err)
			}
			out.Started = true
			return out, nil
		}
	}
	if !running {
		if err := svc.Start(); err != nil {
			return out, fmt.Errorf("start service %s: %w", Name, err)
		}
		out.Started = true
	}
	return out, nil
}

// Uninstall stops and removes the service whose worker directory is dir.
// It reports whether there was one; removing a missing service is not an
// error.
func Uninstall(init Init, dir string) (bool, error) {
	cfg := &kservice.Config{Name: Name, Option: kservice.KeyValue{}}
	svc, err := init.sys.New(noProgram{}, cfg)
	if err != nil {
		return false, fmt.Errorf("service %s under %s: %w", Name, init, err)
	}
	status, serr := svc.Status()
	if errors.Is(serr, kservice.ErrNotInstalled) {
		return false, removeMarker(dir)
	}
	if serr != nil || status == kservice.StatusRunning {
		// A failed unit still needs its stop, to reset it; an error of
		// Stop on a stopped service says nothing Uninstall would not.
		if err := svc.Stop(); err != nil && status == kservice.StatusRunning {
			return true, fmt.Errorf("stop service %s: %w", Name, err)
		}
	}
	if err := svc.Uninstall(); err != nil {
		return true, fmt.Errorf("remove service %s: %w", Name, err)
	}
	return true, removeMarker(dir)
}

func removeMarker(dir string) error {
	if dir == "" {
		return nil
	}
	err := os.Remove(filepath.Join(dir, definitionFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove service definition record: %w", err)
	}
	return nil
}

// Describe is a human summary of the service definition of s under init,
// for --dry-run: the unit file under systemd, the command line elsewhere.
func Describe(init *Init, s Spec) (string, error) {
	cfg, err := Config(s)
	if err != nil {
		return "", err
	}
	if init == nil || init.sys.String() == "linux-systemd" {
		return "/etc/systemd/system/" + Name + ".service:\n" + cfg.Option["SystemdScript"].(string), nil
	}
	user := cfg.UserName
	if user == "" {
		user = "(the init system's default)"
	}
	args := slices.Clone(cfg.Arguments)
	return fmt.Sprintf("service %s under %s\n  command: %s %s\n  user: %s\n  starts at boot, restarts on failure\n",
		Name, init, cfg.Executable, strings.Join(args, " "), user), nil
}
