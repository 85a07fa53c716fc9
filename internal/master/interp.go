package master

import (
	"strings"

	"github.com/drover-ci/drover"
)

// interpolate expands %(prop:name)s, %(prop:name:-default)s, %(fact:name)s
// and %% in s. A missing property or fact with no default expands to "".
// The config loader has already rejected malformed forms, so anything it
// does not recognise here is copied as it stands.
func interpolate(s string, props drover.Properties, facts drover.Facts) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] != '%' {
			b.WriteByte(s[i])
			i++
			continue
		}
		if strings.HasPrefix(s[i:], "%%") {
			b.WriteByte('%')
			i += 2
			continue
		}
		if strings.HasPrefix(s[i:], "%(") {
			if end := strings.Index(s[i:], ")s"); end > 0 {
				expr := s[i+2 : i+end]
				if v, ok := lookup(expr, props, facts); ok {
					b.WriteString(v)
					i += end + 2
					continue
				}
			}
		}
		b.WriteByte('%')
		i++
	}
	return b.String()
}

func lookup(expr string, props drover.Properties, facts drover.Facts) (string, bool) {
	kind, rest, ok := strings.Cut(expr, ":")
	if !ok {
		return "", false
	}
	name, def, hasDef := strings.Cut(rest, ":-")
	var v string
	switch kind {
	case "prop":
		v = props[name]
	case "fact":
		v = facts.Get(name)
	default:
		return "", false
	}
	if v == "" && hasDef {
		v = def
	}
	return v, true
}
