package main

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/drover-ci/drover"
)

func TestParseJoinURL(t *testing.T) {
	const fp = "sha256:3f1c000000000000000000000000000000000000000000000000000000000abc"
	tests := []struct {
		in        string
		addr      string // space-separated
		pin       string
		plaintext bool
		err       string // substring; "" for success
	}{
		{in: "https://ci.example.org:9989", addr: "ci.example.org:9989"},
		{in: "https://ci.example.org", addr: "ci.example.org:9989"},
		{in: "ci.example.org:7000", addr: "ci.example.org:7000"},
		{in: "https://ci.example.org:9989/", addr: "ci.example.org:9989"},
		{in: "https://ci.example.org:9989#" + fp, addr: "ci.example.org:9989", pin: fp},
		{in: "https://ci.example.org:9989#" + strings.ToUpper(fp), addr: "ci.example.org:9989", pin: fp},
		{in: "https://ci.example.org?ca-sha256=" + fp, addr: "ci.example.org:9989", pin: fp},
		{in: "https://ci.example.org?ca-sha256=" + fp + "#" + fp, addr: "ci.example.org:9989", pin: fp},
		{in: "https://[::1]:9000", addr: "[::1]:9000"},
		{in: "http://127.0.0.1:9000", addr: "127.0.0.1:9000", plaintext: true},
		{in: "https://ci1.example.org,ci2.example.org:7000#" + fp, addr: "ci1.example.org:9989 ci2.example.org:7000", pin: fp},
		{in: "ci1.example.org, [::1]:7000,ci1.example.org", addr: "ci1.example.org:9989 [::1]:7000"},
		{in: "http://127.0.0.1:1,localhost:2", addr: "127.0.0.1:1 localhost:2", plaintext: true},
		{in: "https://ci1.example.org,,ci2.example.org", err: "no host"},
		{in: "https://ci1.example.org,ci2.example.org/x", err: "only https://HOST[:PORT]"},
		{in: "", err: "no master URL"},
		{in: "ftp://ci.example.org", err: `scheme "ftp"`},
		{in: "https://:9989", err: "no host"},
		{in: "https://ci.example.org:99999", err: "port"},
		{in: "https://ci.example.org/api/v1", err: "only https://HOST[:PORT]"},
		{in: "https://ci.example.org?token=x", err: `unknown parameter "token"`},
		{in: "https://ci.example.org?ca-sha256=sha256:aa#sha256:bb", err: "two different CA fingerprints"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseJoinURL(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || drover.KindOf(err) != drover.Invalid {
					t.Fatalf("parseJoinURL(%q) = %+v, %v; want an Invalid error with %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := joinTarget{addrs: strings.Fields(tt.addr), pin: tt.pin, plaintext: tt.plaintext}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parseJoinURL(%q) = %+v, want %+v", tt.in, got, want)
			}
		})
	}
}

func TestParseJoinTarget(t *testing.T) {
	const fp = "sha256:3f1c000000000000000000000000000000000000000000000000000000000abc"
	tests := []struct {
		url       string
		masters   []string
		addrs     string // space-separated
		pin       string
		plaintext bool
		err       string
	}{
		{url: "https://ci1.example.org#" + fp, masters: []string{"ci2.example.org:7000", "ci3.example.org"},
			addrs: "ci1.example.org:9989 ci2.example.org:7000 ci3.example.org:9989", pin: fp},
		{masters: []string{"ci1.example.org,ci2.example.org"}, addrs: "ci1.example.org:9989 ci2.example.org:9989"},
		{masters: []string{"ci1.example.org#" + fp}, addrs: "ci1.example.org:9989", pin: fp},
		{url: "http://127.0.0.1:1", masters: []string{"127.0.0.1:2"}, addrs: "127.0.0.1:1 127.0.0.1:2", plaintext: true},
		{url: "http://127.0.0.1:1", masters: []string{"https://127.0.0.1:2"}, err: "mixes plaintext and TLS"},
		{url: "https://ci1.example.org#sha256:aa", masters: []string{"ci2.example.org#sha256:bb"}, err: "CA"},
		{masters: []string{"ci1.example.org:99999"}, err: "port"},
		{err: "no master URL"},
	}
	for _, tt := range tests {
		got, err := parseJoinTarget(tt.url, tt.masters)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || drover.KindOf(err) != drover.Invalid {
				t.Errorf("parseJoinTarget(%q, %q) = %+v, %v; want an Invalid error with %q", tt.url, tt.masters, got, err, tt.err)
			}
			continue
		}
		want := joinTarget{addrs: strings.Fields(tt.addrs), pin: tt.pin, plaintext: tt.plaintext}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseJoinTarget(%q, %q) = %+v, %v; want %+v", tt.url, tt.masters, got, err, want)
		}
	}
}

func TestMergePin(t *testing.T) {
	tests := []struct {
		url, flag, want string
		ok              bool
	}{
		{"", "", "", true},
		{"sha256:aa", "", "sha256:aa", true},
		{"", " SHA256:AA ", "sha256:aa", true},
		{"sha256:aa", "sha256:aa", "sha256:aa", true},
		{"sha256:aa", "sha256:bb", "", false},
	}
	for _, tt := range tests {
		got, err := mergePin(tt.url, tt.flag)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("mergePin(%q, %q) = %q, %v; want %q (ok %v)", tt.url, tt.flag, got, err, tt.want, tt.ok)
		}
	}
}

func TestWorkerRunArgs(t *testing.T) {
	tests := []struct {
		labels []string
		max    int
		want   []string
	}{
		{nil, 1, nil},
		{[]string{"gpu=yes", "rack=b"}, 1, []string{"--label", "gpu=yes", "--label", "rack=b"}},
		{nil, 4, []string{"--max-builds", "4"}},
	}
	for _, tt := range tests {
		if got := workerRunArgs(tt.labels, tt.max); !slices.Equal(got, tt.want) {
			t.Errorf("workerRunArgs(%q, %d) = %q, want %q", tt.labels, tt.max, got, tt.want)
		}
	}
}

func TestFormatFacts(t *testing.T) {
	f := drover.Facts{
		"hostname": {"box"},
		"memory":   {"16000"},
		"arch":     {"amd64", "x86_64"},
		"os":       {"linux", "debian", "debian-12"},
		"cpus":     {"8"},
	}
	got := formatFacts(f, map[string]string{"gpu": "yes"})
	want := "os=linux,debian,debian-12 arch=amd64,x86_64 cpus=8 memory=16000 hostname=box gpu=yes"
	if got != want {
		t.Errorf("formatFacts = %q, want %q", got, want)
	}
}

func TestJoinDryRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("--user drover needs root")
	}
	var out, errOut strings.Builder
	dir := t.TempDir()
	err := run(t.Context(), []string{"worker", "join", "https://ci.example.org#sha256:aa", "--dry-run",
		"--dir", dir, "--user", "drover", "--name", "w1", "--label", "gpu=yes", "--max-builds", "2"}, &out, &errOut)
	if err != nil {
		t.Fatalf("join --dry-run: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{
		"would connect to the master at ci.example.org:9989 and verify its CA is sha256:aa",
		"would register as w1 in " + dir,
		"would create the system user drover",
		"worker run --dir " + dir + " --label gpu=yes --max-builds 2",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestJoinDryRunSeveralMasters(t *testing.T) {
	var out, errOut strings.Builder
	dir := t.TempDir()
	err := run(t.Context(), []string{"worker", "join", "https://ci1.example.org,ci2.example.org:7000#sha256:aa", "--master", "ci3.example.org",
		"--dry-run", "--dir", dir, "--user", "", "--name", "w1"}, &out, &errOut)
	if err != nil {
		t.Fatalf("join --dry-run: %v\n%s", err, errOut.String())
	}
	want := "would connect to any of the masters at ci1.example.org:9989, ci2.example.org:7000, ci3.example.org:9989 and verify its CA is sha256:aa"
	if !strings.Contains(out.String(), want) {
		t.Errorf("dry run output lacks %q:\n%s", want, out.String())
	}
}
