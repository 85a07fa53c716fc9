// Package pki makes and loads the master's TLS material: a private CA that
// `drover master init` creates, and the server certificate it signs for the
// worker port. Workers pin the CA by fingerprint on first contact, as
// `kubeadm join` does, so no public CA and no hand-copied files are needed.
//
// The masters of a site share one CA (CopyCA, `master init --ca-from`),
// each with its own server certificate, so one pinned fingerprint is good
// for all of them.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/drover-ci/drover"
)

// File names inside a master directory.
const (
	CACertFile     = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server-key.pem"
)

// Lifetimes. The CA outlives any sensible fleet; the server certificate is
// re-issued by `master init --renew` (or at start when it nears expiry).
const (
	caLifetime     = 20 * 365 * 24 * time.Hour
	serverLifetime = 5 * 365 * 24 * time.Hour
	// renewBefore is how close to expiry a server certificate is replaced
	// at master start, so a long-lived master never serves an expired one.
	renewBefore = 30 * 24 * time.Hour
)

// Fingerprint is the pin of a CA certificate: "sha256:" and the lowercase
// hex SHA-256 of its DER bytes. Workers are given exactly this string.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CA is a certificate authority with its key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a CA named for the master.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name + " CA", Organization: []string{"Drover"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// IssueServer signs a server certificate valid for hosts (DNS names or IP
// addresses). localhost and the loopback addresses are always included.
func (ca *CA) IssueServer(hosts []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate server key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "drover master", Organization: []string{"Drover"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign server certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode server key: %w", err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
}

// Init creates the CA and a server certificate for hosts in dir, unless a
// CA is there already, in which case it is kept (so the fingerprint that
// workers pinned stays valid) and only a missing server certificate is
// issued. It returns the CA's fingerprint.
func Init(dir string, hosts []string) (string, error) {
	ca, err := LoadCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		if _, cerr := os.Stat(filepath.Join(dir, CACertFile)); cerr == nil {
			// Never replace a CA that workers may have pinned.
			return "", fmt.Errorf("%s holds %s without its key: put %s back (or copy the site's CA with --ca-from)", dir, CACertFile, CAKeyFile)
		}
		if ca, err = NewCA("Drover"); err != nil {
			return "", err
		}
		keyDER, err := x509.MarshalECPrivateKey(ca.Key)
		if err != nil {
			return "", fmt.Errorf("encode CA key: %w", err)
		}
		if err := writeFile(filepath.Join(dir, CAKeyFile), pemBlock("EC PRIVATE KEY", keyDER), 0o600); err != nil {
			return "", err
		}
		if err := writeFile(filepath.Join(dir, CACertFile), pemBlock("CERTIFICATE", ca.Cert.Raw), 0o644); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	if !signedBy(dir, ca) {
		if err := issueServerFiles(dir, ca, hosts); err != nil {
			return "", err
		}
	}
	return Fingerprint(ca.Cert), nil
}

// CopyCA copies the CA of the master directory from, certificate and key,
// into dir (the key readable by its owner only), so that the server
// certificate Init then issues in dir is signed by the same CA: workers
// that pinned from's fingerprint trust both masters. A dir that holds this
// CA already is left as it is; one that holds another CA is a Conflict,
// since workers may have pinned it. It returns the CA's fingerprint.
func CopyCA(from, dir string) (string, error) {
	ca, err := LoadCA(from)
	if err != nil {
		return "", fmt.Errorf("the CA to copy: %w", err)
	}
	fp := Fingerprint(ca.Cert)
	switch have, err := loadCACert(dir); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", err
	case !have.Equal(ca.Cert):
		return "", drover.Errorf(drover.Conflict,
			"%s holds another CA (%s), not the one of %s (%s): workers may have pinned it; to replace it, remove %s, %s, %s and %s from %s first",
			dir, Fingerprint(have), from, fp, CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile, dir)
	default:
		if _, err := LoadCA(dir); err == nil {
			return fp, nil // copied before
		}
	}
	keyDER, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return "", fmt.Errorf("encode CA key: %w", err)
	}
	if err := writeFile(filepath.Join(dir, CAKeyFile), pemBlock("EC PRIVATE KEY", keyDER), 0o600); err != nil {
		return "", err
	}
	if err := writeFile(filepath.Join(dir, CACertFile), pemBlock("CERTIFICATE", ca.Cert.Raw), 0o644); err != nil {
		return "", err
	}
	return fp, nil
}

// loadCACert reads the CA certificate of dir, without its key.
func loadCACert(dir string) (*x509.Certificate, error) {
	path := filepath.Join(dir, CACertFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("read CA %s: no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA %s: %w", path, err)
	}
	return cert, nil
}

// signedBy reports whether dir holds a server certificate and key that
// ca signed: not so when it has none, or one of another CA (the CA files
// were replaced by hand, or copied into a directory that had a server
// certificate).
func signedBy(dir string, ca *CA) bool {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile))
	if err != nil {
		return false
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	return err == nil && leaf.CheckSignatureFrom(ca.Cert) == nil
}

func issueServerFiles(dir string, ca *CA, hosts []string) error {
	certPEM, keyPEM, err := ca.IssueServer(hosts)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, ServerKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, ServerCertFile), certPEM, 0o644)
}

// LoadCA reads the CA from dir. It fails with an error wrapping
// os.ErrNotExist when there is none.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA in %s: %w", dir, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse CA in %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("CA key in %s is not ECDSA", dir)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ServerTLS loads the server certificate of dir for the worker port,
// presenting the CA in the chain so that a worker can find the certificate
// it pins. A server certificate near expiry, or not signed by dir's CA, is
// re-issued first.
func ServerTLS(dir string, hosts []string) (*tls.Config, string, error) {
	ca, err := LoadCA(dir)
	if err != nil {
		return nil, "", fmt.Errorf("%w (run `drover master init %s` first)", err, dir)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile))
	if err == nil {
		leaf, perr := x509.ParseCertificate(pair.Certificate[0])
		if perr == nil && (time.Until(leaf.NotAfter) < renewBefore || leaf.CheckSignatureFrom(ca.Cert) != nil) {
			err = os.ErrNotExist // treat as missing: re-issue below
		}
	}
	if err != nil {
		if err := issueServerFiles(dir, ca, hosts); err != nil {
			return nil, "", err
		}
		if pair, err = tls.LoadX509KeyPair(filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)); err != nil {
			return nil, "", fmt.Errorf("load server certificate: %w", err)
		}
	}
	pair.Certificate = append(pair.Certificate, ca.Cert.Raw)
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
	}, Fingerprint(ca.Cert), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the system has no randomness: nothing is safe
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeFile writes through a temporary file and a rename, so a crash never
// leaves half a key behind.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
