package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerproto"
)

// Enrollment is the worker a directory holds once Enroll returns.
type Enrollment struct {
	Name          string   // the worker's name, as the master registered it
	Masters       []string // host:port of each master's worker port, as stored in the directory
	CAFingerprint string   // "sha256:<hex>" of the pinned CA; empty for plaintext
	// Already reports that the directory held this worker's own token for
	// this site: nothing was sent, and at most the list of masters was
	// written.
	Already bool
	// ProbeFacts are the answers of the master's probes on this machine,
	// run once at enrollment (none when Already), and Probes how many the
	// master has.
	ProbeFacts drover.Facts
	Probes     int
}

// VerifyMaster makes one TLS handshake with the master at addr (host:port)
// and checks its certificate as a worker in dir would: against pin
// ("sha256:<hex>" of the CA) when given, else against the CA pinned in
// dir/ca.pem. It writes nothing, and returns the fingerprint of the CA that
// verified the master. A pin or chain mismatch is an Unauthorized error;
// an unreachable master is an Unavailable one.
func VerifyMaster(ctx context.Context, addr, pin, dir string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return "", drover.Errorf(drover.Invalid, "master address %q: want host:port", addr)
	}
	v := &verifier{host: host}
	if pin != "" {
		if v.pin, err = parseFingerprint(pin); err != nil {
			return "", err
		}
	} else {
		if v.ca, err = loadCA(dir); err != nil {
			return "", err
		}
		if v.ca == nil {
			return "", drover.Errorf(drover.Invalid, "no CA fingerprint: pass the sha256 fingerprint of the master's CA, as `drover master init` printed it")
		}
	}
	var verified string
	v.pinned = func(ca *x509.Certificate) error {
		verified = fingerprint(ca.Raw)
		return nil
	}
	// An installer must fail with a message, not hang on a firewall
	// that swallows packets or a master that never answers.
	conn, err := dialTLS(ctx, v, addr, dialTimeout)
	if err != nil {
		return "", err
	}
	if err := conn.Close(); err != nil {
		return "", fmt.Errorf("close TLS connection to %s: %w", addr, err)
	}
	if verified == "" && v.ca != nil {
		verified = fingerprint(v.ca.Raw)
	}
	return verified, nil
}

// Enroll does the first part of Run: it pins the master's CA by its
// fingerprint, trades cfg.Token (an enrollment token) for the worker's own
// token and writes both to cfg.Dir (worker.json, ca.pem), exactly as Run
// would, without opening the Connect stream. A later Run with only
// cfg.Dir then connects as this worker.
//
// Enroll tries cfg.Masters in order until one answers, giving up on each
// that does not within cfg.Timeouts (Dial, then Enroll) with an
// Unavailable error that says so. It is idempotent:
// when cfg.Dir already holds a token of this worker for a site that
// includes one of cfg.Masters, it sends nothing and writes at most
// cfg.Masters as the new list of masters (a running worker reads it when
// it restarts), so it is safe while a worker runs in cfg.Dir. A directory
// enrolled with masters none of which is in cfg.Masters is a Conflict: one
// directory is one worker.
func Enroll(ctx context.Context, cfg Config) (Enrollment, error) {
	if cfg.Dir == "" {
		return Enrollment{}, drover.Errorf(drover.Invalid, "no worker directory")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return Enrollment{}, drover.Errorf(drover.Invalid, "worker directory %q: %w", cfg.Dir, err)
	}
	st, err := loadState(dir)
	if err != nil {
		return Enrollment{}, err
	}
	masters := cleanMasters(cfg.Masters)
	if st.Token != "" {
		if len(masters) > 0 && !slices.ContainsFunc(masters, func(m string) bool { return slices.Contains(st.Masters, m) }) {
			return Enrollment{}, drover.Errorf(drover.Conflict,
				"%s holds worker %q of master %s, not %s: uninstall it (drover worker uninstall --purge) or use another directory",
				dir, st.Name, strings.Join(st.Masters, ", "), strings.Join(masters, ", "))
		}
		if cfg.Name != "" && st.Name != cfg.Name {
			return Enrollment{}, drover.Errorf(drover.Conflict,
				"%s holds worker %q, not %q: use another directory for another worker", dir, st.Name, cfg.Name)
		}
		ca, err := loadCA(dir)
		if err != nil {
			return Enrollment{}, err
		}
		samePin := true
		if cfg.CAFingerprint != "" && !cfg.Plaintext {
			pin, err := parseFingerprint(cfg.CAFingerprint)
			if err != nil {
				return Enrollment{}, err
			}
			samePin = ca != nil && fingerprint(ca.Raw) == pin
		}
		if samePin {
			if len(masters) > 0 && !slices.Equal(masters, st.Masters) {
				if err := checkMasters(masters, cfg.Plaintext); err != nil {
					return Enrollment{}, err
				}
				st.Masters = masters
				if err := saveState(dir, st); err != nil {
					return Enrollment{}, err
				}
			}
			e := Enrollment{Name: st.Name, Masters: st.Masters, CAFingerprint: st.CAFingerprint, Already: true}
			if ca != nil {
				e.CAFingerprint = fingerprint(ca.Raw)
			}
			return e, nil
		}
		// The master's CA was replaced: fall through to New, which takes
		// the new pin, and store its CA once a handshake verifies it.
	}

	a, err := New(cfg)
	if err != nil {
		return Enrollment{}, err
	}
	if err := a.enrollOnly(ctx); err != nil {
		return Enrollment{}, err
	}
	a.stateMu.Lock()
	e := Enrollment{Name: a.st.Name, Masters: slices.Clone(a.masters), Probes: len(a.enrolledProbes), ProbeFacts: drover.Facts{}}
	if a.ca != nil {
		e.CAFingerprint = fingerprint(a.ca.Raw)
	}
	probes := a.enrolledProbes
	a.stateMu.Unlock()
	for _, pr := range probes {
		if v := a.runProbe(ctx, pr); len(v) > 0 {
			e.ProbeFacts[pr.GetName()] = v
		}
	}
	return e, nil
}

// enrollOnly connects as session does, but stops after the enrollment
// (or, for a worker that already has its token, after the handshake that
// pins the CA). It tries each master in turn until one answers; a refusal
// is final.
func (a *Agent) enrollOnly(ctx context.Context) error {
	var err error
	for _, addr := range a.masters {
		if err = a.enrollAt(ctx, addr); err == nil {
			return nil
		}
		if k := drover.KindOf(err); k == drover.Unauthorized || k == drover.Invalid || ctx.Err() != nil {
			return err
		}
		if len(a.masters) > 1 {
			a.log.Warn("master did not answer; trying the next", "master", addr, "err", err)
		}
	}
	return err
}

// enrollAt is enrollOnly with the master at addr.
func (a *Agent) enrollAt(ctx context.Context, addr string) error {
	host, _, _ := net.SplitHostPort(addr) // checked by New
	a.stateMu.Lock()
	v := &verifier{host: host, ca: a.ca, pin: a.st.CAFingerprint, pinned: a.pinCA}
	enrolling := a.enrollToken != ""
	a.stateMu.Unlock()
	if !enrolling {
		if a.cfg.Plaintext {
			return nil
		}
		conn, err := dialTLS(ctx, v, addr, a.timeouts.Dial)
		if err != nil {
			return err
		}
		return conn.Close()
	}

	creds := insecure.NewCredentials()
	if !a.cfg.Plaintext {
		creds = credentials.NewTLS(v.tlsConfig())
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return drover.Errorf(drover.Invalid, "master address %q: %w", addr, err)
	}
	defer conn.Close()
	err = waitConnected(ctx, conn, addr, a.timeouts.Dial)
	if err == nil {
		err = a.enroll(ctx, workerproto.NewWorkerClient(conn), addr)
	}
	if f := v.failure(); err != nil && f != nil {
		return f
	}
	return err
}

// dialTLS makes a TLS connection to the master at addr, verified by v,
// within d: a master that accepts the TCP connection and never finishes
// the handshake is a noAnswer error, a certificate v rejects its
// failure, anything else an Unavailable error.
func dialTLS(ctx context.Context, v *verifier, addr string, d time.Duration) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	conn, err := (&tls.Dialer{Config: v.tlsConfig()}).DialContext(dctx, "tcp", addr)
	switch {
	case err == nil:
		return conn, nil
	case v.failure() != nil:
		return nil, v.failure()
	case ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded):
		return nil, noAnswer(addr, "the connection handshake", d)
	}
	return nil, drover.Errorf(drover.Unavailable, "TLS handshake with master %s: %w", addr, err)
}
