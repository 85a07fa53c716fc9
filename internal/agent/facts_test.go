package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
)

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"os-release-debian", []string{"debian", "debian-12"}},
		{"os-release-ubuntu", []string{"ubuntu", "ubuntu-24"}},
		{"os-release-arch", []string{"arch"}},
		{"os-release-empty", nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := parseOSRelease(f); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseMeminfo(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "meminfo"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mib, ok := parseMeminfo(f)
	if !ok || mib != 16011 {
		t.Errorf("got %d, %v; want 16011 MiB", mib, ok)
	}
}

func TestDetectFacts(t *testing.T) {
	f := DetectFacts("9.9.9")
	if os := f["os"]; len(os) == 0 || os[0] != runtime.GOOS {
		t.Errorf("os = %q", os)
	}
	if arch := f["arch"]; len(arch) == 0 || arch[0] != runtime.GOARCH {
		t.Errorf("arch = %q", arch)
	}
	if runtime.GOARCH == "amd64" && !slices.Contains(f["arch"], "x86_64") {
		t.Errorf("arch = %q, want the x86_64 alias", f["arch"])
	}
	if f.Get("cpus") != strconv.Itoa(runtime.NumCPU()) {
		t.Errorf("cpus = %q", f["cpus"])
	}
	if f.Get("drover_version") != "9.9.9" {
		t.Errorf("drover_version = %q", f["drover_version"])
	}
	if h, _ := os.Hostname(); f.Get("hostname") != h {
		t.Errorf("hostname = %q, want %q", f["hostname"], h)
	}
	if runtime.GOOS == "linux" {
		if n, err := strconv.Atoi(f.Get("memory")); err != nil || n <= 0 {
			t.Errorf("memory = %q", f["memory"])
		}
		if _, err := os.Stat("/etc/os-release"); err == nil && len(f["os"]) < 2 {
			t.Errorf("os = %q, want the distribution too", f["os"])
		}
	}
	if _, ok := DetectFacts("")["drover_version"]; ok {
		t.Error("empty version reported")
	}
}
