package master

import (
	"maps"
	"testing"

	"github.com/drover-ci/drover"
)

// A step's configured links are interpolated as it starts, keeping links
// it already has; what its command published is added to the step and to
// the properties the step sets, winning over those from its output.
func TestStepLinksMerge(t *testing.T) {
	spec := &drover.StepSpec{URLs: map[string]string{
		"coverage": "https://cov.example.org/%(prop:buildnumber)s/",
		"arch":     "https://example.org/%(fact:arch)s",
	}}
	st := &drover.Step{URLs: map[string]string{"kept": "https://example.org/kept"}}
	stepURLs(spec, st, drover.Properties{"buildnumber": "7"}, drover.Facts{"arch": {"arm64"}})
	want := map[string]string{
		"coverage": "https://cov.example.org/7/",
		"arch":     "https://example.org/arm64",
		"kept":     "https://example.org/kept",
	}
	if !maps.Equal(st.URLs, want) {
		t.Errorf("step urls = %v, want %v", st.URLs, want)
	}

	c := newCommand("b1-s0", "w", 1, nil, 1, 0)
	c.pub = published{
		urls:  map[string]string{"report": "https://example.org/r"},
		props: drover.Properties{"version": "1.2.3"},
	}
	props := c.mergePublished(st, drover.Properties{"version": "from-output", "other": "x"})
	if st.URLs["report"] != "https://example.org/r" || st.URLs["coverage"] != want["coverage"] {
		t.Errorf("merged urls = %v", st.URLs)
	}
	if props["version"] != "1.2.3" || props["other"] != "x" {
		t.Errorf("merged properties = %v", props)
	}
	if p := newCommand("b1-s1", "w", 2, nil, 1, 0).mergePublished(&drover.Step{}, nil); p != nil {
		t.Errorf("nothing published gives properties %v, want nil", p)
	}
}
