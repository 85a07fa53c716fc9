package config

import (
	"strings"
	"testing"
	"time"

	"go.starlark.net/starlark"
)

func TestToDuration(t *testing.T) {
	tests := []struct {
		in      starlark.Value
		want    time.Duration
		wantErr string
	}{
		{starlark.String("90s"), 90 * time.Second, ""},
		{starlark.String("1m"), time.Minute, ""},
		{starlark.String("2h30m"), 150 * time.Minute, ""},
		{starlark.String("1d"), 24 * time.Hour, ""},
		{starlark.String("1d12h"), 36 * time.Hour, ""},
		{starlark.String("1.5h"), 90 * time.Minute, ""},
		{starlark.String("250ms"), 250 * time.Millisecond, ""},
		{starlark.String(" 10s "), 10 * time.Second, ""},
		{starlark.String("45"), 45 * time.Second, ""},
		{starlark.String("0"), 0, ""},
		{starlark.MakeInt(90), 90 * time.Second, ""},
		{starlark.Float(0.5), 500 * time.Millisecond, ""},
		{starlark.String(""), 0, "empty duration"},
		{starlark.String("-5s"), 0, "must not be negative"},
		{starlark.MakeInt(-1), 0, "must not be negative"},
		{starlark.Float(-0.5), 0, "must not be negative"},
		{starlark.String("1y"), 0, `unknown unit "y"`},
		{starlark.String("5"), 5 * time.Second, ""},
		{starlark.String("m5"), 0, "bad duration"},
		{starlark.String("1..5s"), 0, "bad duration"},
		{starlark.String("1e3"), 0, `unknown unit "e"`},
		{starlark.String("999999999d"), 0, "too long"},
		{starlark.MakeInt64(1 << 62), 0, "too long"},
		{starlark.Float(1e300), 0, "too long"},
		{starlark.None, 0, "got NoneType"},
		{starlark.True, 0, "got bool"},
	}
	for _, tt := range tests {
		t.Run(tt.in.String(), func(t *testing.T) {
			got, err := toDuration(tt.in)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("toDuration(%s): %v", tt.in, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("toDuration(%s) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			case tt.wantErr == "" && got != tt.want:
				t.Errorf("toDuration(%s) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestToSize(t *testing.T) {
	tests := []struct {
		in      starlark.Value
		want    int64
		wantErr string
	}{
		{starlark.MakeInt(1024), 1024, ""},
		{starlark.String("64MiB"), 64 << 20, ""},
		{starlark.String("10MB"), 10_000_000, ""},
		{starlark.String("1GiB"), 1 << 30, ""},
		{starlark.String("1.5KiB"), 1536, ""},
		{starlark.String("512 kB"), 512_000, ""},
		{starlark.String("2tib"), 2 << 40, ""},
		{starlark.String("100"), 100, ""},
		{starlark.String("100B"), 100, ""},
		{starlark.MakeInt(-1), 0, "must not be negative"},
		{starlark.String("-1MB"), 0, "bad size"},
		{starlark.String("1PB"), 0, `unknown unit "PB"`},
		{starlark.String("MiB"), 0, "bad size"},
		{starlark.String("99999999TiB"), 0, "too large"},
		{starlark.Float(1.5), 0, "got float"},
	}
	for _, tt := range tests {
		t.Run(tt.in.String(), func(t *testing.T) {
			got, err := toSize(tt.in)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("toSize(%s): %v", tt.in, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("toSize(%s) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			case tt.wantErr == "" && got != tt.want:
				t.Errorf("toSize(%s) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCheckInterpolation(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"make test", ""},
		{"git checkout %(prop:revision)s", ""},
		{"%(prop:got_revision)s-%(prop:buildnumber)s", ""},
		{"--prefix=%(prop:prefix:-/usr/local)s", ""},
		{"--prefix=%(prop:prefix:-)s", ""},
		{"-j%(fact:cpus)s", ""},
		{"%(fact:drover_version)s %(prop:a.b-c)s", ""},
		{"echo 100%%", ""},
		{"echo %%(prop:not_a_placeholder", ""},
		{"date +%Y-%m-%d; printf %d 1", ""},
		{"trailing %", ""},
		{"%(prop:x)s%(prop:y)s", ""},
		{"%(prop:revision)", "must be followed by s"},
		{"%(prop:revision)d", "must be followed by s"},
		{"%(prop:revision", "unterminated"},
		{"%(revision)s", "want %(prop:NAME)s"},
		{"%(property:branch)s", `unknown source "property"`},
		{"%(prop:)s", `bad property name ""`},
		{"%(prop:1x)s", `bad property name "1x"`},
		{"%(prop:a b)s", `bad property name "a b"`},
		{"%(fact:OS)s", `bad fact name "OS"`},
		{"%(fact:os:-linux)s", `bad fact name`},
		{"ok %(prop:x)s then %(bad)s", "at offset 19"},
		{"%%%(prop:x)s", ""},
		{"%%%(nope)s", "at offset 2"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := CheckInterpolation(tt.in)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CheckInterpolation(%q): %v", tt.in, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("CheckInterpolation(%q) = %v, want error containing %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestDefaultStepName(t *testing.T) {
	tests := []struct {
		command []string
		shell   bool
		want    string
	}{
		{[]string{"make -j8"}, true, "make"},
		{[]string{"./configure --prefix=/usr"}, true, "configure"},
		{[]string{"CC=gcc CFLAGS=-O2 make"}, true, "make"},
		{[]string{"  python3 -m pytest"}, true, "python3"},
		{[]string{`"./run tests" -v`}, true, "run"},
		{[]string{"%(prop:tool)s build"}, true, "shell"},
		{[]string{"A=1"}, true, "shell"},
		{[]string{""}, true, "shell"},
		{[]string{"/usr/bin/env", "FOO=1", "make"}, false, "env"},
		{[]string{"CC=gcc"}, false, "CC=gcc"},
		{nil, false, "shell"},
	}
	for _, tt := range tests {
		if got := defaultStepName(tt.command, tt.shell); got != tt.want {
			t.Errorf("defaultStepName(%q, %v) = %q, want %q", tt.command, tt.shell, got, tt.want)
		}
	}
}

func TestResolveModule(t *testing.T) {
	tests := []struct {
		from, module string
		want         string
		wantErr      string
	}{
		{"master.star", "lib.star", "lib.star", ""},
		{"master.star", "lib/steps.star", "lib/steps.star", ""},
		{"lib/steps.star", "common.star", "lib/common.star", ""},
		{"lib/steps.star", "../shared.star", "shared.star", ""},
		{"lib/steps.star", "./x/../common.star", "lib/common.star", ""},
		{"master.star", "../x.star", "", "escapes"},
		{"lib/steps.star", "../../x.star", "", "escapes"},
		{"master.star", "/etc/x.star", "", "relative"},
		{"master.star", `lib\x.star`, "", "relative"},
		{"master.star", "lib.py", "", ".star"},
		{"master.star", "", "", "empty"},
	}
	for _, tt := range tests {
		got, err := resolveModule(tt.from, tt.module)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("resolveModule(%q, %q) = %q, %v; want %q", tt.from, tt.module, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("resolveModule(%q, %q) = %q, %v; want error containing %q", tt.from, tt.module, got, err, tt.wantErr)
		}
	}
}

func TestSourceName(t *testing.T) {
	tests := map[string]string{
		"https://example.org/proj.git":  "proj",
		"https://example.org/proj.git/": "proj",
		"https://example.org/proj":      "proj",
		"git@github.com:org/repo.git":   "repo",
		"host:repo.git":                 "repo",
		"/srv/git/runtime":              "runtime",
		"https://example.org/":          "example.org",
	}
	for url, want := range tests {
		if got := sourceName(url); got != want {
			t.Errorf("sourceName(%q) = %q, want %q", url, got, want)
		}
	}
}
