package config

import (
	"go.starlark.net/starlark"

	"github.com/drover-ci/drover"
)

// stepURLs reads a step's urls argument: a dict of link name to URL, the
// URL possibly holding %(prop:name)s interpolations (applied when the
// step starts).
func (l *loader) stepURLs(errorf errorfFunc, v starlark.Value) map[string]string {
	if isNone(v) {
		return nil
	}
	pairs, errs := toStringPairs(v, false)
	for _, err := range errs {
		errorf("urls: %v", err)
	}
	if len(pairs) > drover.MaxStepURLs {
		errorf("urls: %d links, want at most %d", len(pairs), drover.MaxStepURLs)
		return nil
	}
	var out map[string]string
	for _, p := range pairs {
		if err := drover.CheckStepURL(p.key, p.value); err != nil {
			errorf("urls: %v", err)
			continue
		}
		if err := CheckInterpolation(p.value); err != nil {
			errorf("urls %s: %v", p.key, err)
			continue
		}
		if out == nil {
			out = make(map[string]string, len(pairs))
		}
		out[p.key] = p.value
	}
	return out
}
