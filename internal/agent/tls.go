package agent

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"github.com/drover-ci/drover"
)

// fingerprintPrefix starts a CA fingerprint as the master prints it.
const fingerprintPrefix = "sha256:"

// fingerprint is "sha256:" and the lowercase hex of the SHA-256 of a
// certificate's DER bytes: what `drover master init` prints and what
// --ca-fingerprint takes.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return fingerprintPrefix + hex.EncodeToString(sum[:])
}

// parseFingerprint checks and normalises a pin given by a person.
func parseFingerprint(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	hexPart, ok := strings.CutPrefix(s, fingerprintPrefix)
	if !ok {
		return "", drover.Errorf(drover.Invalid, "CA fingerprint %q must start with %q", s, fingerprintPrefix)
	}
	if b, err := hex.DecodeString(hexPart); err != nil || len(b) != sha256.Size {
		return "", drover.Errorf(drover.Invalid, "CA fingerprint %q: want %q and 64 hex digits", s, fingerprintPrefix)
	}
	return s, nil
}

// verifier checks the master's certificate chain for one connection
// attempt, the way `kubeadm join` does: on first contact it looks for the
// CA whose fingerprint is pinned among the certificates the master
// presents, and from then on it trusts only the CA it stored.
//
// The TLS stack runs with InsecureSkipVerify and calls verify instead, since
// the master's CA is in no system pool; verify does the full chain and name
// check itself.
type verifier struct {
	host string            // the host dialed: a DNS name or an IP address
	ca   *x509.Certificate // the stored CA; when nil, pin is used
	pin  string            // "sha256:<hex>" of the CA, for first contact
	// pinned is called with the CA found by pin, once verified, to store it.
	pinned func(*x509.Certificate) error

	mu     sync.Mutex
	failed error // the last verification failure: retrying cannot fix it
}

// failure returns the verification error of the last handshake, if any.
func (v *verifier) failure() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.failed
}

func (v *verifier) tlsConfig() *tls.Config {
	return &tls.Config{
		ServerName:         v.host,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verifyConnection does the verification
		VerifyConnection:   v.verifyConnection,
	}
}

func (v *verifier) verifyConnection(cs tls.ConnectionState) error {
	err := v.verify(cs.PeerCertificates)
	if err != nil && drover.KindOf(err) == drover.Unauthorized {
		v.mu.Lock()
		v.failed = err
		v.mu.Unlock()
	}
	return err
}

func (v *verifier) verify(certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return drover.Errorf(drover.Unauthorized, "master %s presented no certificate", v.host)
	}
	ca := v.ca
	if ca == nil {
		for _, c := range certs {
			if fingerprint(c.Raw) == v.pin {
				ca = c
				break
			}
		}
		if ca == nil {
			var seen []string
			for _, c := range certs {
				seen = append(seen, fingerprint(c.Raw))
			}
			return drover.Errorf(drover.Unauthorized,
				"master %s: CA fingerprint mismatch: no certificate it presented has the pinned fingerprint %s (it presented %s); check --ca-fingerprint against what the master printed",
				v.host, v.pin, strings.Join(seen, ", "))
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       v.host, // VerifyHostname checks IP SANs when host is an IP
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		what := "the pinned CA (" + fingerprint(ca.Raw) + ")"
		if v.ca != nil {
			what = "the CA stored in " + caFileName + " (" + fingerprint(ca.Raw) + ")"
		}
		return drover.Errorf(drover.Unauthorized, "master %s: certificate not valid for %s: %w", v.host, what, err)
	}
	if v.ca == nil && v.pinned != nil {
		if err := v.pinned(ca); err != nil {
			return fmt.Errorf("store pinned CA: %w", err)
		}
	}
	return nil
}
