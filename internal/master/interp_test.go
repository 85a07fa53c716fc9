package master

import (
	"testing"

	"github.com/drover-ci/drover"
)

func TestInterpolate(t *testing.T) {
	props := drover.Properties{"revision": "abc123", "branch": "main", "empty": ""}
	facts := drover.Facts{"os": {"linux", "debian"}}
	tests := []struct{ in, want string }{
		{"make", "make"},
		{"git checkout %(prop:revision)s", "git checkout abc123"},
		{"%(prop:branch)s-%(fact:os)s", "main-linux"},
		{"%(prop:missing)s|", "|"},
		{"%(prop:missing:-dflt)s", "dflt"},
		{"%(prop:empty:-dflt)s", "dflt"},
		{"100%% done", "100% done"},
		{"printf '%s' x", "printf '%s' x"},
		{"%(unknown:x)s", "%(unknown:x)s"},
		{"%(prop:revision", "%(prop:revision"},
		{"${HOME} %(prop:revision)s", "${HOME} abc123"},
	}
	for _, tt := range tests {
		if got := interpolate(tt.in, props, facts); got != tt.want {
			t.Errorf("interpolate(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
