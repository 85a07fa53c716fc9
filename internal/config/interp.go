package config

import (
	"fmt"
	"strings"
)

// CheckInterpolation reports whether s is a well-formed command string:
// every "%(" must start %(prop:NAME)s, %(prop:NAME:-default)s or
// %(fact:NAME)s, and "%%" is a literal percent sign. A "%" followed by
// anything else is left alone, because shell commands are full of them
// (date +%Y, printf %d).
func CheckInterpolation(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 >= len(s) {
			continue
		}
		switch s[i+1] {
		case '%':
			i++ // literal percent; the next % starts afresh
		case '(':
			n, err := checkPlaceholder(s[i:])
			if err != nil {
				return fmt.Errorf("bad interpolation at offset %d of %q: %w", i, s, err)
			}
			i += n - 1
		}
	}
	return nil
}

// checkPlaceholder checks the placeholder at the start of s, which begins
// with "%(", and returns its length.
func checkPlaceholder(s string) (int, error) {
	end := strings.Index(s, ")")
	if end < 0 {
		return 0, fmt.Errorf("unterminated %%(...)s")
	}
	if end+1 >= len(s) || s[end+1] != 's' {
		return 0, fmt.Errorf("%s must be followed by s", s[:end+1])
	}
	body := s[2:end]
	kind, rest, ok := strings.Cut(body, ":")
	if !ok {
		return 0, fmt.Errorf("%s: want %%(prop:NAME)s, %%(prop:NAME:-default)s or %%(fact:NAME)s", s[:end+2])
	}
	switch kind {
	case "prop":
		name, _, _ := strings.Cut(rest, ":-")
		if !propNameRE.MatchString(name) {
			return 0, fmt.Errorf("%s: bad property name %q", s[:end+2], name)
		}
	case "fact":
		if !factNameRE.MatchString(rest) {
			return 0, fmt.Errorf("%s: bad fact name %q (want [a-z0-9_.-]+, no default)", s[:end+2], rest)
		}
	default:
		return 0, fmt.Errorf("%s: unknown source %q (want prop or fact)", s[:end+2], kind)
	}
	return end + 2, nil
}
