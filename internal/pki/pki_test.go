package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInitKeepsTheCA(t *testing.T) {
	dir := t.TempDir()
	fp, err := Init(dir, []string{"ci.example.org", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+64 {
		t.Fatalf("fingerprint %q", fp)
	}
	for _, f := range []string{CAKeyFile, ServerKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st.Mode())
		}
	}
	again, err := Init(dir, nil)
	if err != nil || again != fp {
		t.Fatalf("second Init = %q, %v; want the same CA %q", again, err, fp)
	}
	cfg, fp2, err := ServerTLS(dir, nil)
	if err != nil || fp2 != fp {
		t.Fatalf("ServerTLS = %q, %v", fp2, err)
	}
	chain := cfg.Certificates[0].Certificate
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates; the CA must be presented for pinning", len(chain))
	}
	ca, _ := x509.ParseCertificate(chain[1])
	leaf, _ := x509.ParseCertificate(chain[0])
	if Fingerprint(ca) != fp {
		t.Error("presented CA does not match the fingerprint")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, host := range []string{"localhost", "127.0.0.1", "ci.example.org", "10.1.2.3"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("server certificate not valid for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "evil.example.org"}); err == nil {
		t.Error("server certificate valid for an unlisted host")
	}
}

func TestTLSHandshakeWithPinnedCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := ServerTLS(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: host})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c.Close()
}

func TestServerTLSWithoutInit(t *testing.T) {
	if _, _, err := ServerTLS(t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "master init") {
		t.Errorf("ServerTLS without a CA = %v; want advice to run master init", err)
	}
}
