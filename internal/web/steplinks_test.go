package web

import (
	"reflect"
	"testing"
)

// Only absolute http and https URLs become links; the rest is text.
func TestStepLinks(t *testing.T) {
	got := stepLinks(map[string]string{
		"b-https":  "https://example.org/r",
		"a-http":   "http://example.org/",
		"c-js":     "javascript:alert(1)",
		"d-rel":    "/builds/1",
		"e-nohost": "https:///x",
		"f-file":   "file:///tmp/x",
	})
	want := []stepLink{
		{"a-http", "http://example.org/", true},
		{"b-https", "https://example.org/r", true},
		{"c-js", "javascript:alert(1)", false},
		{"d-rel", "/builds/1", false},
		{"e-nohost", "https:///x", false},
		{"f-file", "file:///tmp/x", false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stepLinks = %+v\nwant %+v", got, want)
	}
}
