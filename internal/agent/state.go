package agent

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const (
	stateFileName = "worker.json"
	caFileName    = "ca.pem"
)

// state is what a worker directory remembers between runs, so that only
// the first `drover worker run` needs a token and a CA fingerprint.
type state struct {
	Name string `json:"name"`
	// Masters are the host:port addresses of the masters of one site, in
	// the order the owner gave them.
	Masters []string `json:"masters,omitempty"`
	// Master is the first of Masters. Older versions stored only this
	// field: it is read when Masters is absent, and still written so that
	// an older drover can run the directory (with the first master).
	Master string `json:"master,omitempty"`
	// Token is the worker's own secret, never an enrollment token.
	Token         string `json:"token,omitempty"`
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
	// Availability is the owner's schedule (--available, --timezone,
	// --max-load, --over-load), kept so a later run need not repeat it.
	Availability *Schedule `json:"availability,omitempty"`
}

// loadState reads DIR/worker.json; a missing file is an empty state.
func loadState(dir string) (state, error) {
	var st state
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read worker state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("parse %s: %w", filepath.Join(dir, stateFileName), err)
	}
	if len(st.Masters) == 0 && st.Master != "" {
		st.Masters = []string{st.Master}
	}
	return st, nil
}

// saveState writes DIR/worker.json readable by its owner only.
func saveState(dir string, st state) error {
	st.Master = ""
	if len(st.Masters) > 0 {
		st.Master = st.Masters[0]
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode worker state: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, stateFileName), append(b, '\n'))
}

// loadCA reads the pinned CA certificate, DIR/ca.pem; nil if there is none.
func loadCA(dir string) (*x509.Certificate, error) {
	path := filepath.Join(dir, caFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pinned CA: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("read pinned CA %s: no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse pinned CA %s: %w", path, err)
	}
	return cert, nil
}

// saveCA writes the pinned CA certificate as DIR/ca.pem.
func saveCA(dir string, cert *x509.Certificate) error {
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	return writeFileAtomic(filepath.Join(dir, caFileName), b)
}

// writeFileAtomic replaces path with data, mode 0600, by writing a temporary
// file beside it and renaming it, so that a crash never leaves a worker
// directory with half a token.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after a successful rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
