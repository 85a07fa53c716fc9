package drover

import (
	"strings"
	"unicode"
)

// Limits on a step's links, so that a command cannot flood a build page.
const (
	MaxStepURLs       = 32   // links one step may hold
	MaxStepURLName    = 100  // bytes of a link's name
	MaxStepURLLength  = 2048 // bytes of a link's URL
	MaxStepPropValue  = 4096 // bytes of a property value set by a command
	maxStepPropKeyLen = 100
)

// CheckStepURL checks a link a step publishes: a name that is not empty
// and has no control characters, and a URL without spaces or control
// characters, within the limits above. It does not require http or https:
// the web UI renders other schemes as text.
func CheckStepURL(name, url string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return Errorf(Invalid, "link name must not be empty")
	case len(name) > MaxStepURLName:
		return Errorf(Invalid, "link name %.20q… is longer than %d bytes", name, MaxStepURLName)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return Errorf(Invalid, "link name %q has control characters", name)
	case url == "":
		return Errorf(Invalid, "link %q: URL must not be empty", name)
	case len(url) > MaxStepURLLength:
		return Errorf(Invalid, "link %q: URL is longer than %d bytes", name, MaxStepURLLength)
	case strings.IndexFunc(url, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return Errorf(Invalid, "link %q: URL %q has spaces or control characters", name, url)
	}
	return nil
}

// CheckStepProperty checks a property a running command sets: a name as
// the config allows ([A-Za-z_][A-Za-z0-9_.-]*), and a value of bounded size.
func CheckStepProperty(key, value string) error {
	ok := key != "" && len(key) <= maxStepPropKeyLen
	for i, r := range key {
		letter := r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
		if !letter && (i == 0 || !(r == '.' || r == '-' || '0' <= r && r <= '9')) {
			ok = false
		}
	}
	if !ok {
		return Errorf(Invalid, "bad property name %q (want a letter or '_', then letters, digits, '_', '-' or '.')", key)
	}
	if len(value) > MaxStepPropValue {
		return Errorf(Invalid, "property %s: value is longer than %d bytes", key, MaxStepPropValue)
	}
	return nil
}
