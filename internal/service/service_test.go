package service

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	kservice "github.com/kardianos/service"

	"github.com/drover-ci/drover"
)

func TestSystemdUnit(t *testing.T) {
	s := Spec{
		Executable: "/usr/local/bin/drover",
		Dir:        "/var/lib/drover",
		User:       "drover",
		Args:       []string{"--label", "gpu=yes", "--max-builds", "2"},
	}
	unit := SystemdUnit(s)
	for _, want := range []string{
		"\nExecStart=/usr/local/bin/drover worker run --dir /var/lib/drover --label gpu=yes --max-builds 2\n",
		"\nUser=drover\n",
		"\nRestart=always\n",
		"\nKillMode=process\n",
		"\nRestartSec=5s\n",
		"\nWorkingDirectory=/var/lib/drover\n",
		"\nAfter=network-online.target\n",
		"\n[Install]\nWantedBy=multi-user.target\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}

	// No User= line: systemd's default, root.
	s.User = ""
	if unit := SystemdUnit(s); strings.Contains(unit, "User=") {
		t.Errorf("unit without a user has a User= line:\n%s", unit)
	}
}

func TestSystemdQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/usr/bin/drover", "/usr/bin/drover"},
		{"gpu=yes", "gpu=yes"},
		{"/opt/my builds", `"/opt/my builds"`},
		{"50%", "50%%"},
		{"$HOME", "$$HOME"},
		{`a"b`, `"a\"b"`},
		{`C:\x`, `"C:\\x"`},
		{"", `""`},
	}
	for _, tt := range tests {
		if got := systemdQuote(tt.in); got != tt.want {
			t.Errorf("systemdQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestConfig(t *testing.T) {
	s := Spec{Executable: "/usr/local/bin/drover", Dir: "/var/lib/drover", User: "drover", Args: []string{"--label", "os=custom"}}
	c, err := Config(s)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "drover-worker" || c.Executable != s.Executable || c.UserName != "drover" {
		t.Errorf("config = %+v", c)
	}
	wantArgs := []string{"worker", "run", "--dir", "/var/lib/drover", "--label", "os=custom"}
	if !slices.Equal(c.Arguments, wantArgs) {
		t.Errorf("arguments = %q, want %q", c.Arguments, wantArgs)
	}
	for k, want := range map[string]any{"Restart": "always", "RunAtLoad": true, "KeepAlive": true, "OnFailure": "restart"} {
		if c.Option[k] != want {
			t.Errorf("option %s = %v, want %v", k, c.Option[k], want)
		}
	}
	if unit, _ := c.Option["SystemdScript"].(string); unit != SystemdUnit(s) {
		t.Errorf("SystemdScript option is not SystemdUnit(s):\n%s", unit)
	}
}

func TestConfigInvalid(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
	}{
		{"relative executable", Spec{Executable: "drover", Dir: "/var/lib/drover"}},
		{"relative dir", Spec{Executable: "/bin/drover", Dir: "work"}},
		{"template action", Spec{Executable: "/bin/drover", Dir: "/var/lib/drover", Args: []string{"--label", "x={{y}}"}}},
		{"newline", Spec{Executable: "/bin/drover", Dir: "/var/lib/\ndrover"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Config(tt.spec); drover.KindOf(err) != drover.Invalid {
				t.Errorf("Config(%+v) = %v, want an Invalid error", tt.spec, err)
			}
		})
	}
}

func TestDetect(t *testing.T) {
	systemd := &fakeSystem{name: "linux-systemd"}
	sysv := &fakeSystem{name: "linux-system-v"}
	openrc := &fakeSystem{name: "linux-openrc"}
	launchd := &fakeSystem{name: "darwin-launchd"}
	all := []kservice.System{systemd, openrc, sysv}
	tests := []struct {
		name    string
		goos    string
		present []string
		chosen  kservice.System
		want    string // "" for ErrNoInit
	}{
		{"systemd running", "linux", []string{"/run/systemd/system"}, sysv, "systemd"},
		{"openrc running", "linux", []string{"/run/openrc/softlevel"}, sysv, "openrc"},
		// A container with /etc/init.d: kardianos would choose System V.
		{"container", "linux", nil, sysv, ""},
		{"macOS", "darwin", nil, launchd, "launchd"},
		{"nothing", "freebsd", nil, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exists := func(p string) bool { return slices.Contains(tt.present, p) }
			init, err := detect(tt.goos, exists, all, tt.chosen)
			if tt.want == "" {
				if !errors.Is(err, ErrNoInit) {
					t.Fatalf("detect = %v, %v; want ErrNoInit", init, err)
				}
				return
			}
			if err != nil || init.String() != tt.want {
				t.Fatalf("detect = %v, %v; want %s", init, err, tt.want)
			}
		})
	}
}

func TestInstallIdempotent(t *testing.T) {
	dir := t.TempDir()
	sys := &fakeSystem{name: "linux-systemd"}
	init := Init{sys: sys}
	spec := Spec{Executable: "/usr/bin/drover", Dir: dir, User: "drover"}

	steps := []struct {
		name      string
		spec      Spec
		before    func()
		want      Outcome
		installs  int
		restarts  int
		wantState kservice.Status
	}{
		{"first install", spec, nil, Outcome{Installed: true, Started: true}, 1, 0, kservice.StatusRunning},
		{"again: nothing to do", spec, nil, Outcome{}, 1, 0, kservice.StatusRunning},
		{"stopped: started", spec, func() { sys.svc.status = kservice.StatusStopped }, Outcome{Started: true}, 1, 0, kservice.StatusRunning},
		{"changed: reinstalled and restarted", Spec{Executable: spec.Executable, Dir: dir, User: "drover", Args: []string{"--max-builds", "4"}},
			nil, Outcome{Installed: true, Started: true}, 2, 1, kservice.StatusRunning},
		{"removed behind our back: installed", spec, func() { sys.svc.installed = false; sys.svc.status = kservice.StatusStopped },
			Outcome{Installed: true, Started: true}, 3, 1, kservice.StatusRunning},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		got, err := Install(init, st.spec)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got != st.want {
			t.Errorf("%s: outcome %+v, want %+v", st.name, got, st.want)
		}
		if sys.svc.installs != st.installs || sys.svc.restarts != st.restarts || sys.svc.status != st.wantState {
			t.Errorf("%s: installs %d restarts %d status %v; want %d %d %v", st.name,
				sys.svc.installs, sys.svc.restarts, sys.svc.status, st.installs, st.restarts, st.wantState)
		}
		if !slices.Equal(sys.svc.cfg.Arguments, st.spec.Arguments()) {
			t.Errorf("%s: installed arguments %q", st.name, sys.svc.cfg.Arguments)
		}
	}

	removed, err := Uninstall(init, dir)
	if err != nil || !removed || sys.svc.installed || sys.svc.status != kservice.StatusStopped {
		t.Fatalf("Uninstall = %v, %v; service %+v", removed, err, sys.svc)
	}
	if _, err := os.Stat(filepath.Join(dir, definitionFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("definition record left behind: %v", err)
	}
	removed, err = Uninstall(init, dir)
	if err != nil || removed {
		t.Fatalf("second Uninstall = %v, %v; want false, nil", removed, err)
	}
}

func TestDescribe(t *testing.T) {
	spec := Spec{Executable: "/usr/bin/drover", Dir: "/var/lib/drover", User: "drover"}
	d, err := Describe(nil, spec)
	if err != nil || !strings.Contains(d, "/etc/systemd/system/drover-worker.service:\n[Unit]") {
		t.Errorf("Describe(nil) = %q, %v", d, err)
	}
	d, err = Describe(&Init{sys: &fakeSystem{name: "darwin-launchd"}}, spec)
	if err != nil || !strings.Contains(d, "under launchd") || !strings.Contains(d, "/usr/bin/drover worker run --dir /var/lib/drover") {
		t.Errorf("Describe(launchd) = %q, %v", d, err)
	}
}

// fakeSystem is an init system in memory, with one service.
type fakeSystem struct {
	name string
	svc  *fakeService
}

func (s *fakeSystem) String() string    { return s.name }
func (s *fakeSystem) Detect() bool      { return true }
func (s *fakeSystem) Interactive() bool { return true }
func (s *fakeSystem) New(i kservice.Interface, c *kservice.Config) (kservice.Service, error) {
	if s.svc == nil {
		s.svc = &fakeService{status: kservice.StatusStopped}
	}
	s.svc.next = c
	return s.svc, nil
}

type fakeService struct {
	kservice.Service // unused methods panic
	next             *kservice.Config
	cfg              *kservice.Config
	installed        bool
	status           kservice.Status
	installs         int
	restarts         int
}

func (f *fakeService) Status() (kservice.Status, error) {
	if !f.installed {
		return kservice.StatusUnknown, kservice.ErrNotInstalled
	}
	return f.status, nil
}

func (f *fakeService) Install() error {
	if f.installed {
		return errors.New("Init already exists")
	}
	f.installed, f.cfg = true, f.next
	f.installs++
	return nil
}

func (f *fakeService) Uninstall() error {
	if !f.installed {
		return errors.New("not installed")
	}
	f.installed = false
	return nil
}

func (f *fakeService) Start() error {
	if !f.installed {
		return errors.New("not installed")
	}
	f.status = kservice.StatusRunning
	return nil
}

func (f *fakeService) Stop() error {
	f.status = kservice.StatusStopped
	return nil
}

func (f *fakeService) Restart() error {
	f.restarts++
	f.status = kservice.StatusRunning
	return nil
}
