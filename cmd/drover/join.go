package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/agent"
	"github.com/drover-ci/drover/internal/service"
)

const (
	// defaultWorkerPort is the master's worker (gRPC) port, for join URLs
	// that name none.
	defaultWorkerPort = "9989"
	// defaultServiceUser is the system user a joined worker runs as when
	// join runs as root: builds run untrusted code, never as root.
	defaultServiceUser = "drover"
	// dialTimeout bounds the reachability check: an installer must say
	// "unreachable", not hang on a firewall that drops packets.
	dialTimeout = 10 * time.Second
	// foregroundStopGrace is how long a foreground worker has to stop its
	// commands after Ctrl-C before it is killed.
	foregroundStopGrace = 30 * time.Second
)

// joinOptions are the flags of `drover worker join`.
type joinOptions struct {
	url        string
	masters    []string // --master: more masters of the site
	token      string
	name       string
	pin        string
	dir        string
	user       string
	labels     []string
	maxBuilds  int
	foreground bool
	dryRun     bool
}

// joinTarget is what a join URL names.
type joinTarget struct {
	addrs     []string // host:port of each master's worker port
	pin       string   // CA fingerprint from the URL, if any
	plaintext bool     // http://: no TLS (loopback only; the agent enforces it)
}

// parseJoinURL reads https://HOST[:PORT][,HOST[:PORT]…][#sha256:…|?ca-sha256=sha256:…]:
// one master, or the masters of a site, comma-separated. A URL without a
// scheme is taken as https.
func parseJoinURL(raw string) (joinTarget, error) {
	var t joinTarget
	s := strings.TrimSpace(raw)
	if s == "" {
		return t, drover.Errorf(drover.Invalid, "no master URL: want https://HOST[:PORT]")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	scheme, rest, _ := strings.Cut(s, "://")
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	hosts, tail := rest[:end], rest[end:]
	for _, h := range strings.Split(hosts, ",") {
		one, err := parseJoinHost(raw, scheme+"://"+strings.TrimSpace(h)+tail)
		if err != nil {
			return joinTarget{}, err
		}
		if !slices.Contains(t.addrs, one.addrs[0]) {
			t.addrs = append(t.addrs, one.addrs[0])
		}
		t.pin, t.plaintext = one.pin, one.plaintext
	}
	return t, nil
}

// parseJoinTarget combines the join URL (which may be empty) with the
// --master flags, HOST[:PORT] each, which take the URL's scheme.
func parseJoinTarget(raw string, masters []string) (joinTarget, error) {
	var t joinTarget
	scheme := "https://"
	if strings.TrimSpace(raw) != "" || len(masters) == 0 {
		var err error
		if t, err = parseJoinURL(raw); err != nil {
			return t, err
		}
		if t.plaintext {
			scheme = "http://"
		}
	}
	for _, m := range masters {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if !strings.Contains(m, "://") {
			m = scheme + m
		}
		more, err := parseJoinURL(m)
		if err != nil {
			return joinTarget{}, err
		}
		if len(t.addrs) > 0 && more.plaintext != t.plaintext {
			return joinTarget{}, drover.Errorf(drover.Invalid, "--master %s: mixes plaintext and TLS masters", m)
		}
		if t.pin, err = mergePin(t.pin, more.pin); err != nil {
			return joinTarget{}, err
		}
		t.plaintext = more.plaintext
		for _, a := range more.addrs {
			if !slices.Contains(t.addrs, a) {
				t.addrs = append(t.addrs, a)
			}
		}
	}
	return t, nil
}

// parseJoinHost reads one scheme://HOST[:PORT][#…|?…] of the URL raw.
func parseJoinHost(raw, s string) (joinTarget, error) {
	var t joinTarget
	u, err := url.Parse(s)
	if err != nil {
		return t, drover.Errorf(drover.Invalid, "master URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "https", "grpcs":
	case "http", "grpc":
		t.plaintext = true
	default:
		return t, drover.Errorf(drover.Invalid, "master URL %q: scheme %q: want https", raw, u.Scheme)
	}
	if u.Hostname() == "" {
		return t, drover.Errorf(drover.Invalid, "master URL %q: no host", raw)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") {
		return t, drover.Errorf(drover.Invalid, "master URL %q: want only https://HOST[:PORT], the master's worker port", raw)
	}
	port := u.Port()
	if port == "" {
		port = defaultWorkerPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return t, drover.Errorf(drover.Invalid, "master URL %q: port %q", raw, port)
	}
	t.addrs = []string{net.JoinHostPort(u.Hostname(), port)}

	q := u.Query()
	for k := range q {
		if k != "ca-sha256" {
			return t, drover.Errorf(drover.Invalid, "master URL %q: unknown parameter %q (only ca-sha256)", raw, k)
		}
	}
	pins := slices.DeleteFunc([]string{u.Fragment, q.Get("ca-sha256")}, func(p string) bool { return p == "" })
	for _, p := range pins {
		p = normalizePin(p)
		if t.pin != "" && t.pin != p {
			return t, drover.Errorf(drover.Invalid, "master URL %q: two different CA fingerprints", raw)
		}
		t.pin = p
	}
	return t, nil
}

// normalizePin puts a fingerprint in the form the agent stores; the agent
// validates it.
func normalizePin(p string) string { return strings.ToLower(strings.TrimSpace(p)) }

// mergePin combines the pin of the URL with --ca-sha256; they must agree.
func mergePin(fromURL, flag string) (string, error) {
	flag = normalizePin(flag)
	switch {
	case flag == "":
		return fromURL, nil
	case fromURL == "" || fromURL == flag:
		return flag, nil
	}
	return "", drover.Errorf(drover.Invalid, "the URL pins CA %s but --ca-sha256 is %s: give one", fromURL, flag)
}

// defaultWorkerDir is where a joined worker lives.
func defaultWorkerDir() string {
	if runtime.GOOS == "windows" {
		if pd := os.Getenv("ProgramData"); pd != "" {
			return filepath.Join(pd, "drover")
		}
	}
	if service.IsPrivileged() || runtime.GOOS == "windows" {
		return "/var/lib/drover"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, "drover-worker")
	}
	return "drover-worker"
}

// defaultUser is the system user a worker runs as: a dedicated one when
// join may create it, else the current user.
func defaultUser() string {
	if service.IsPrivileged() && runtime.GOOS != "windows" {
		return defaultServiceUser
	}
	return ""
}

// defaultName is a worker name from the host name: its first label.
func defaultName() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	h, _, _ = strings.Cut(strings.ToLower(h), ".")
	return h
}

// workerRunArgs are the flags of `worker run` that join passes on to the
// service: the ones not stored in the worker directory.
func workerRunArgs(labels []string, maxBuilds int) []string {
	var args []string
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	if maxBuilds > 1 {
		args = append(args, "--max-builds", strconv.Itoa(maxBuilds))
	}
	return args
}

// installer prints an installer's steps.
type installer struct{ w io.Writer }

func (in installer) ok(format string, args ...any) {
	fmt.Fprintf(in.w, "✓ "+format+"\n", args...)
}

func (in installer) note(format string, args ...any) {
	fmt.Fprintf(in.w, "! "+format+"\n", args...)
}

// fail is the error of a failed step, with a hint at what to do.
func (in installer) fail(step string, err error, hint string) error {
	msg := fmt.Sprintf("✗ %s: %v", step, err)
	if hint != "" {
		msg += "\n  hint: " + hint
	}
	return exitError{code: 1, msg: msg}
}

func joinCmd(g *globals) *cobra.Command {
	var o joinOptions
	c := &cobra.Command{
		Use:   "join https://MASTER[:PORT][,MASTER2[:PORT]…] --token ENROLLMENT_TOKEN",
		Short: "Join this machine to a master's fleet, as a system service",
		Long: `Join this machine to a master's fleet, in one command.

join verifies the master by its CA fingerprint, registers this worker with
the enrollment token, shows the facts it detected, creates a system user
for the builds, and installs and starts a system service (systemd, launchd,
rc.d, Windows service) that runs ` + "`drover worker run --dir DIR`" + ` at boot
and restarts it when it fails.

MASTER[:PORT] is the master's worker port (default ` + defaultWorkerPort + `). The
masters of a site (several masters sharing one database and one CA) are
listed comma-separated in the URL, or with --master; the worker connects
to any of them and fails over to another when one goes away. The CA
fingerprint, sha256:…, as ` + "`drover master init`" + ` printed it, is given with
--ca-sha256 or in the URL: https://ci.example.org:9989#sha256:… or
https://ci.example.org:9989?ca-sha256=sha256:….

join is idempotent: run it again to repair the installation; a directory
already registered with this master is not registered again.

Where no init system runs (a container), join stops after registering;
--foreground runs the worker in this terminal instead of installing a
service. macOS has no user tool join can use: create the user yourself and
pass --user NAME, or pass --user "" to run as the current user.`,
		Example: `  sudo drover worker join https://ci.example.org:9989#sha256:3f1c… --token drover_enroll_… --label gpu=yes
  sudo drover worker join https://ci1.example.org,ci2.example.org#sha256:3f1c… --token drover_enroll_…`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.url = args[0]
			}
			if !cmd.Flags().Changed("dir") {
				o.dir = defaultWorkerDir()
			}
			if !cmd.Flags().Changed("user") {
				o.user = defaultUser()
			}
			return runJoin(cmd.Context(), g, cmd.OutOrStdout(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.token, "token", "", "enrollment token (drover_enroll_…), from the master's admin")
	f.StringSliceVar(&o.masters, "master", nil, "another master of the site, HOST[:PORT]; comma-separated or repeated")
	f.StringVar(&o.name, "name", defaultName(), "worker name")
	f.StringVar(&o.pin, "ca-sha256", "", "the master's CA fingerprint, sha256:…, printed by `drover master init`")
	f.StringVar(&o.dir, "dir", "/var/lib/drover", "worker directory (default /var/lib/drover as root, else ~/drover-worker)")
	f.StringVar(&o.user, "user", defaultServiceUser, "system user the worker runs as, created if missing (default drover as root; \"\" for the current user)")
	f.StringArrayVar(&o.labels, "label", nil, "a static fact of this machine, key=value (repeatable)")
	f.IntVar(&o.maxBuilds, "max-builds", 1, "builds to run at once")
	f.BoolVar(&o.foreground, "foreground", false, "do not install a service: run the worker in this terminal until Ctrl-C")
	f.BoolVar(&o.dryRun, "dry-run", false, "print what join would do, and do nothing")
	return c
}

func runJoin(ctx context.Context, g *globals, w io.Writer, o joinOptions) error {
	in := installer{w: w}
	target, err := parseJoinTarget(o.url, o.masters)
	if err != nil {
		return in.fail("master URL", err, "give the master's worker address, e.g. https://ci.example.org:9989")
	}
	pin, err := mergePin(target.pin, o.pin)
	if err != nil {
		return in.fail("CA fingerprint", err, "")
	}
	if _, err := parsePairs(o.labels, "--label"); err != nil {
		return in.fail("labels", err, "")
	}
	if o.maxBuilds < 1 {
		return in.fail("max builds", fmt.Errorf("--max-builds %d: must be at least 1", o.maxBuilds), "")
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return in.fail("worker directory", err, "")
	}
	if o.user != "" && !service.IsPrivileged() && o.user != currentUser() {
		return in.fail("system user", fmt.Errorf("running the worker as %s needs root", o.user),
			`rerun with sudo, or pass --user "" to run the worker as yourself`)
	}
	exe, err := executable()
	if err != nil {
		return in.fail("service", err, "")
	}
	spec := service.Spec{Executable: exe, Dir: dir, User: o.user, Args: workerRunArgs(o.labels, o.maxBuilds)}
	initSys, initErr := service.DetectInit()

	if o.dryRun {
		return joinPlan(w, o, target, pin, spec, initSys, initErr)
	}

	// 1. The masters: reachable (one at least), the ones pinned, and
	// registered with.
	reachable, err := checkReachable(ctx, in, target.addrs)
	if err != nil {
		return err
	}
	if target.plaintext {
		in.note("plaintext connection: no TLS, no CA to verify (loopback only)")
	} else {
		verified := 0
		for i, addr := range reachable {
			fp, err := agent.VerifyMaster(ctx, addr, pin, dir)
			// A master of several that takes the connection but does not
			// answer is noted, as one that is down is, unless no other
			// is verified.
			if drover.KindOf(err) == drover.Unavailable && (verified > 0 || i < len(reachable)-1) {
				in.note("master %s does not answer (%v): the worker will use it once it answers", addr, err)
				continue
			}
			if err != nil {
				hint := "compare --ca-sha256 with what `drover master init` printed on the master (`drover master init` prints it again)"
				if drover.KindOf(err) == drover.Unavailable {
					hint = "the port answers but not with TLS: is it the master's worker port?"
				}
				if pin == "" {
					hint = "pass the master's CA fingerprint with --ca-sha256 sha256:…, or add #sha256:… to the URL"
				}
				if len(target.addrs) > 1 {
					hint += "; every master of a site needs a certificate of the same CA (`drover master init DIR --ca-from FIRST_MASTER_DIR`)"
				}
				return in.fail("CA fingerprint", err, hint)
			}
			verified++
			if len(target.addrs) == 1 {
				in.ok("CA fingerprint verified (%s)", fp)
			} else {
				in.ok("CA fingerprint verified (%s) at %s", fp, addr)
			}
		}
	}
	labels, _ := parsePairs(o.labels, "--label")
	e, err := agent.Enroll(ctx, agent.Config{
		Masters:       target.addrs,
		Name:          o.name,
		Token:         o.token,
		Dir:           dir,
		CAFingerprint: pin,
		Plaintext:     target.plaintext,
		Labels:        labels,
		MaxBuilds:     o.maxBuilds,
		Version:       version,
		Logger:        g.logger(),
	})
	if err != nil {
		hint := ""
		switch drover.KindOf(err) {
		case drover.Unauthorized:
			hint = "ask the master's admin for a new enrollment token (`drover token create --enroll`)"
		case drover.Conflict:
			hint = "another worker lives in " + dir + ": pass --dir for a new one"
		case drover.Invalid:
			hint = "pass --token drover_enroll_… and --name NAME"
		}
		return in.fail("register", err, hint)
	}
	if e.Already {
		in.ok("already registered as %s", e.Name)
	} else {
		in.ok("registered as %s", e.Name)
	}

	// 2. What the master will match builders against.
	in.ok("detected facts: %s", formatFacts(agent.DetectFacts(version), labels))
	if e.Probes > 0 {
		in.ok("the master's probes (%d answered of %d): %s", len(e.ProbeFacts), e.Probes, formatFacts(e.ProbeFacts, nil))
	}

	// 3. Who builds, and where.
	if o.user == "" {
		in.ok("running as the current user %s", currentUser())
	} else {
		created, err := service.EnsureUser(ctx, o.user, dir)
		if err != nil {
			return in.fail("system user", err, `create the user yourself and pass --user NAME, or pass --user "" to run as `+currentUser())
		}
		if created {
			in.ok("system user %s (created)", o.user)
		} else {
			in.ok("system user %s", o.user)
		}
	}
	if err := service.PrepareDir(dir, o.user); err != nil {
		return in.fail("worker directory", err, "")
	}
	in.ok("worker directory %s", dir)

	// 4. Run it: as a service, or here.
	if o.foreground {
		if initErr == nil {
			in.note("--foreground: not installing a %s service", initSys)
		} else {
			in.note("no init system found (a container?): running the worker in the foreground")
		}
		return runForeground(ctx, g, in, spec)
	}
	if initErr != nil {
		return in.fail("service", initErr,
			fmt.Sprintf("run `%s` yourself (under your own supervisor), or rerun join with --foreground",
				strings.Join(append([]string{"drover"}, spec.Arguments()...), " ")))
	}
	if !service.IsPrivileged() {
		return in.fail("service", errors.New("installing a system service needs root (Administrator on Windows)"),
			"rerun with sudo, or with --foreground to run the worker in this terminal")
	}
	out, err := service.Install(initSys, spec)
	if err != nil {
		return in.fail("service", err, "see the init system's log (journalctl -u "+service.Name+")")
	}
	switch {
	case out.Installed && out.Started:
		in.ok("service %s installed (%s) and started", service.Name, initSys)
	case out.Installed:
		in.ok("service %s installed (%s), running", service.Name, initSys)
	case out.Started:
		in.ok("service %s up to date (%s), started", service.Name, initSys)
	default:
		in.ok("service %s up to date (%s), running", service.Name, initSys)
	}
	fmt.Fprintln(w, "done")
	return nil
}

// checkReachable dials each master and returns those that answer: at
// least one, or it fails. A master of several that is down is noted, not
// fatal: the worker will use it once it is up.
func checkReachable(ctx context.Context, in installer, addrs []string) ([]string, error) {
	d := net.Dialer{Timeout: dialTimeout}
	var reachable []string
	var lastErr error
	for _, addr := range addrs {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			lastErr = fmt.Errorf("connect to %s: %w", addr, err)
			if len(addrs) > 1 {
				in.note("master %s unreachable (%v): the worker will use it once it answers", addr, err)
			}
			continue
		}
		conn.Close()
		reachable = append(reachable, addr)
		in.ok("master reachable at %s", addr)
	}
	if len(reachable) == 0 {
		if len(addrs) > 1 {
			lastErr = fmt.Errorf("none of %s answers", strings.Join(addrs, ", "))
		}
		return nil, in.fail("master reachable", lastErr,
			"is the master running, and its worker port ("+defaultWorkerPort+" unless configured) open to this machine?")
	}
	return reachable, nil
}

// runForeground runs the worker as the service would, until ctx ends.
func runForeground(ctx context.Context, g *globals, in installer, spec service.Spec) error {
	fg := spec
	fg.Args = append(slices.Clone(spec.Args), "--log-level", g.logLevel)
	cmd, err := service.Command(ctx, fg)
	if err != nil {
		return in.fail("foreground worker", err, "")
	}
	cmd.Stdout, cmd.Stderr = g.stdout, g.stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = foregroundStopGrace
	in.ok("worker running in the foreground: %s (Ctrl-C stops it)", strings.Join(append([]string{spec.Executable}, spec.Arguments()...), " "))
	err = cmd.Run()
	if ctx.Err() != nil {
		fmt.Fprintln(in.w, "stopped")
		return nil
	}
	if err != nil {
		return in.fail("foreground worker", err, "")
	}
	return nil
}

// joinPlan prints what join would do.
func joinPlan(w io.Writer, o joinOptions, t joinTarget, pin string, spec service.Spec, initSys service.Init, initErr error) error {
	if len(t.addrs) == 1 {
		fmt.Fprintf(w, "would connect to the master at %s", t.addrs[0])
	} else {
		fmt.Fprintf(w, "would connect to any of the masters at %s", strings.Join(t.addrs, ", "))
	}
	switch {
	case t.plaintext:
		fmt.Fprintln(w, " without TLS")
	case pin != "":
		fmt.Fprintf(w, " and verify its CA is %s\n", pin)
	default:
		fmt.Fprintf(w, " and verify it with the CA stored in %s\n", spec.Dir)
	}
	fmt.Fprintf(w, "would register as %s in %s (unless already registered there)\n", o.name, spec.Dir)
	if o.user == "" {
		fmt.Fprintf(w, "would run the worker as the current user %s\n", currentUser())
	} else {
		fmt.Fprintf(w, "would create the system user %s (unless it exists)\n", o.user)
	}
	fmt.Fprintf(w, "would create %s, mode 0750", spec.Dir)
	if o.user != "" {
		fmt.Fprintf(w, ", owned by %s", o.user)
	}
	fmt.Fprintln(w)
	if o.foreground {
		fmt.Fprintf(w, "would run in the foreground: %s %s\n", spec.Executable, strings.Join(spec.Arguments(), " "))
		return nil
	}
	var sys *service.Init
	if initErr == nil {
		sys = &initSys
		fmt.Fprintf(w, "would install and start this %s service:\n", initSys)
	} else {
		fmt.Fprintf(w, "%v: would stop there; the service would be:\n", initErr)
	}
	desc, err := service.Describe(sys, spec)
	if err != nil {
		return err
	}
	fmt.Fprint(w, desc)
	return nil
}

// formatFacts is "os=linux,debian arch=amd64 cpus=8 …": the facts builders
// are matched against most often first, then the rest, then the labels.
func formatFacts(f drover.Facts, labels map[string]string) string {
	first := []string{"os", "arch", "cpus", "memory"}
	var keys []string
	for k := range f {
		if !slices.Contains(first, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range append(first, keys...) {
		if v, ok := f[k]; ok {
			parts = append(parts, k+"="+strings.Join(v, ","))
		}
	}
	lk := make([]string, 0, len(labels))
	for k := range labels {
		lk = append(lk, k)
	}
	slices.Sort(lk)
	for _, k := range lk {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, " ")
}

// executable is this program's absolute path, symbolic links resolved,
// for the service to run.
func executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this program's path: %w", err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Abs(exe)
}

// currentUser names the user running this command.
func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "(unknown)"
}

func uninstallCmd(g *globals) *cobra.Command {
	var dir, user string
	var purge bool
	c := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop and remove the worker service installed by join",
		Long: `Stop and remove the worker's system service, installed by ` + "`drover worker join`" + `.
With --purge, also remove the worker directory (its token, its builds) and
the system user. Running it again does nothing more.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("dir") {
				dir = defaultWorkerDir()
			}
			if !cmd.Flags().Changed("user") {
				user = defaultUser()
			}
			return runUninstall(cmd.Context(), cmd.OutOrStdout(), dir, user, purge)
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", "/var/lib/drover", "worker directory (default /var/lib/drover as root, else ~/drover-worker)")
	f.StringVar(&user, "user", defaultServiceUser, "system user to remove with --purge (\"\" for none)")
	f.BoolVar(&purge, "purge", false, "also remove the worker directory and the system user")
	return c
}

func runUninstall(ctx context.Context, w io.Writer, dir, sysUser string, purge bool) error {
	in := installer{w: w}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return in.fail("worker directory", err, "")
	}
	initSys, initErr := service.DetectInit()
	if initErr != nil {
		in.ok("no init system found: no service to remove")
	} else {
		removed, err := service.Uninstall(initSys, dir)
		if err != nil {
			hint := ""
			if !service.IsPrivileged() {
				hint = "rerun with sudo"
			}
			return in.fail("remove service", err, hint)
		}
		if removed {
			in.ok("service %s stopped and removed (%s)", service.Name, initSys)
		} else {
			in.ok("no service %s installed (%s)", service.Name, initSys)
		}
	}
	if !purge {
		fmt.Fprintln(w, "done")
		return nil
	}
	switch err := checkWorkerDir(dir); {
	case errors.Is(err, fs.ErrNotExist):
		in.ok("no worker directory %s", dir)
	case err != nil:
		return in.fail("remove worker directory", err, "")
	default:
		if err := os.RemoveAll(dir); err != nil {
			return in.fail("remove worker directory", err, "")
		}
		in.ok("removed worker directory %s", dir)
	}
	if sysUser != "" {
		existed, err := service.RemoveUser(ctx, sysUser)
		if err != nil {
			return in.fail("remove system user", err, "")
		}
		if existed {
			in.ok("removed system user %s", sysUser)
		} else {
			in.ok("no system user %s", sysUser)
		}
	}
	fmt.Fprintln(w, "done")
	return nil
}

// checkWorkerDir guards --purge, which removes a directory tree as root:
// only a worker directory (one holding worker.json) or an empty one goes.
func checkWorkerDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "worker.json")); err != nil {
		return drover.Errorf(drover.Invalid, "%s holds no worker.json: not a worker directory; refusing to remove it", dir)
	}
	return nil
}
