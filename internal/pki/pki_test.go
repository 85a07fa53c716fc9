package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover-ci/drover"
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

func TestCopyCA(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	fp, err := Init(first, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := CopyCA(first, second)
	if err != nil || got != fp {
		t.Fatalf("CopyCA = %q, %v; want %q", got, err, fp)
	}
	if st, err := os.Stat(filepath.Join(second, CAKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("copied CA key: %v, mode %v; want 0600", err, st.Mode())
	}
	if got, err := Init(second, []string{"ci2.example.org"}); err != nil || got != fp {
		t.Fatalf("Init after CopyCA = %q, %v; want %q", got, err, fp)
	}
	// Each master has its own server certificate, of the one CA.
	c1, _ := os.ReadFile(filepath.Join(first, ServerCertFile))
	c2, _ := os.ReadFile(filepath.Join(second, ServerCertFile))
	if len(c2) == 0 || string(c1) == string(c2) {
		t.Error("the second master has no server certificate of its own")
	}
	ca, err := LoadCA(first)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cfg, _, err := ServerTLS(second, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "ci2.example.org"}); err != nil {
		t.Errorf("second master's certificate not valid for the first master's CA: %v", err)
	}
	if got, err := CopyCA(first, second); err != nil || got != fp {
		t.Errorf("CopyCA again = %q, %v; want %q", got, err, fp)
	}

	t.Run("another CA is not replaced", func(t *testing.T) {
		other := t.TempDir()
		ofp, err := Init(other, nil)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(filepath.Join(other, CAKeyFile))
		if _, err := CopyCA(first, other); drover.KindOf(err) != drover.Conflict || !strings.Contains(err.Error(), "another CA") {
			t.Fatalf("CopyCA over another CA = %v; want a conflict", err)
		}
		after, _ := os.ReadFile(filepath.Join(other, CAKeyFile))
		if got, err := Init(other, nil); err != nil || got != ofp || string(before) != string(after) {
			t.Errorf("the other CA changed: %q, %v", got, err)
		}
	})
	t.Run("no CA to copy", func(t *testing.T) {
		if _, err := CopyCA(t.TempDir(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "CA to copy") {
			t.Errorf("CopyCA from an empty directory = %v", err)
		}
	})
	t.Run("a server certificate of another CA is re-issued", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Init(dir, nil); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{CACertFile, CAKeyFile} {
			if err := os.Remove(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := CopyCA(first, dir); err != nil {
			t.Fatal(err)
		}
		if got, err := Init(dir, nil); err != nil || got != fp {
			t.Fatalf("Init = %q, %v", got, err)
		}
		if !signedBy(dir, ca) {
			t.Error("server certificate not re-issued by the copied CA")
		}
	})
	t.Run("a CA certificate without its key is kept", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Init(dir, nil); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(filepath.Join(dir, CACertFile))
		if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := Init(dir, nil); err == nil || !strings.Contains(err.Error(), "without its key") {
			t.Errorf("Init = %v; want a refusal", err)
		}
		if after, _ := os.ReadFile(filepath.Join(dir, CACertFile)); string(after) != string(before) {
			t.Error("Init replaced a CA certificate")
		}
	})
}
