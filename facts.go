package drover

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	version "github.com/hashicorp/go-version"
)

// Facts are what a worker has: built-in facts (os, arch, cpus, memory,
// hostname, drover_version, drover_protocol), its owner's labels, and the output of the
// master's probes. A fact may hold several values (os: linux, debian,
// debian-12); a requirement is met when any value meets it.
type Facts map[string][]string

// FactProtocol is the fact the master sets on every connected worker: the
// version of the worker protocol it speaks (see workerproto), so that a
// step needing a newer protocol can require it (">= 9").
const FactProtocol = "drover_protocol"

// Get returns the first value of fact name, or "".
func (f Facts) Get(name string) string {
	if v := f[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Keys returns the fact names in order.
func (f Facts) Keys() []string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Merge returns f with every fact of over replacing f's fact of the same
// name. The master uses it to let facts set in its config override what a
// worker claims.
func (f Facts) Merge(over Facts) Facts {
	out := make(Facts, len(f)+len(over))
	for k, v := range f {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// ConstraintKind is how a requirement tests a fact.
type ConstraintKind string

const (
	ConstraintExact   ConstraintKind = "exact"   // some value equals
	ConstraintVersion ConstraintKind = "version" // some value, read as a version, satisfies
	ConstraintPresent ConstraintKind = "present" // "*": the fact has a non-empty value
	ConstraintAbsent  ConstraintKind = "absent"  // "!": the fact is missing or empty
)

// Requirement is one thing a builder needs of a worker: fact Fact must
// satisfy Constraint. Build them with ParseRequirement.
type Requirement struct {
	Fact       string         `json:"fact"`
	Constraint string         `json:"constraint"`
	Kind       ConstraintKind `json:"kind"`
	versions   version.Constraints
}

// versionOps are the prefixes that make a constraint a version constraint.
var versionOps = []string{">=", "<=", "!=", "~>", ">", "<", "="}

// ParseRequirement parses a constraint on fact: an exact value, "*" for
// presence, "!" for absence, or a version constraint such as ">= 3.22, < 4".
func ParseRequirement(fact, constraint string) (Requirement, error) {
	r := Requirement{Fact: fact, Constraint: constraint}
	if fact == "" {
		return r, Errorf(Invalid, "requirement with an empty fact name")
	}
	c := strings.TrimSpace(constraint)
	switch {
	case c == "*":
		r.Kind = ConstraintPresent
	case c == "!":
		r.Kind = ConstraintAbsent
	case hasVersionOp(c):
		vc, err := version.NewConstraint(c)
		if err != nil {
			return r, Errorf(Invalid, "requirement %s: bad version constraint %q: %v", fact, constraint, err)
		}
		r.Kind, r.versions = ConstraintVersion, vc
	default:
		r.Kind = ConstraintExact
	}
	return r, nil
}

func hasVersionOp(c string) bool {
	for _, op := range versionOps {
		if strings.HasPrefix(c, op) {
			return true
		}
	}
	return false
}

// leadingVersion finds the dotted number at the start of a fact value, so
// that "12.2.0-14+deb12u1", "v3.22.1" and "3.22 (build 5)" all read as
// versions: probes print what tools print, and tools are not tidy.
var leadingVersion = regexp.MustCompile(`^v?(\d+(?:\.\d+)*)`)

// ParseLenientVersion reads the leading dotted number of s as a version.
func ParseLenientVersion(s string) (*version.Version, bool) {
	m := leadingVersion.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return nil, false
	}
	v, err := version.NewVersion(m[1])
	return v, err == nil
}

// Check reports whether facts satisfy r and, either way, why, in words fit
// for the eligibility page.
func (r Requirement) Check(facts Facts) (bool, string) {
	values := nonEmpty(facts[r.Fact])
	switch r.Kind {
	case ConstraintPresent:
		if len(values) == 0 {
			return false, fmt.Sprintf("%s: missing, required present", r.Fact)
		}
		return true, fmt.Sprintf("%s: present (%s)", r.Fact, strings.Join(values, ", "))
	case ConstraintAbsent:
		if len(values) > 0 {
			return false, fmt.Sprintf("%s: is %s, required absent", r.Fact, strings.Join(values, ", "))
		}
		return true, fmt.Sprintf("%s: absent", r.Fact)
	case ConstraintVersion:
		if len(values) == 0 {
			return false, fmt.Sprintf("%s: missing, required %s", r.Fact, r.Constraint)
		}
		constraints := r.versions
		if constraints == nil { // a Requirement made without ParseRequirement (e.g. decoded JSON)
			var err error
			if constraints, err = version.NewConstraint(r.Constraint); err != nil {
				return false, fmt.Sprintf("%s: bad constraint %q", r.Fact, r.Constraint)
			}
		}
		for _, v := range values {
			if ver, ok := ParseLenientVersion(v); ok && constraints.Check(ver) {
				return true, fmt.Sprintf("%s: %s satisfies %s", r.Fact, v, r.Constraint)
			}
		}
		return false, fmt.Sprintf("%s: %s does not satisfy %s", r.Fact, strings.Join(values, ", "), r.Constraint)
	default:
		for _, v := range values {
			if v == r.Constraint {
				return true, fmt.Sprintf("%s: is %s", r.Fact, v)
			}
		}
		if len(values) == 0 {
			return false, fmt.Sprintf("%s: missing, required %s", r.Fact, r.Constraint)
		}
		return false, fmt.Sprintf("%s: is %s, required %s", r.Fact, strings.Join(values, ", "), r.Constraint)
	}
}

func nonEmpty(vs []string) []string {
	out := vs[:0:0]
	for _, v := range vs {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Eligibility is the answer to "may this worker run this builder, and why".
type Eligibility struct {
	Worker   string   `json:"worker"`
	Eligible bool     `json:"eligible"`
	Reasons  []string `json:"reasons"` // one line per requirement or rule
}

// CheckEligibility tests a worker against a builder's static needs (its
// requirements and pinned workers), not its momentary state.
func CheckEligibility(b *Builder, worker string, facts Facts) Eligibility {
	e := Eligibility{Worker: worker, Eligible: true}
	if len(b.Workers) > 0 {
		pinned := false
		for _, w := range b.Workers {
			if w == worker {
				pinned = true
				break
			}
		}
		if pinned {
			e.Reasons = append(e.Reasons, "worker: named by the builder")
		} else {
			e.Eligible = false
			e.Reasons = append(e.Reasons, fmt.Sprintf("worker: builder is pinned to %s", strings.Join(b.Workers, ", ")))
		}
	}
	for _, r := range b.Requires {
		ok, why := r.Check(facts)
		if !ok {
			e.Eligible = false
		}
		e.Reasons = append(e.Reasons, why)
	}
	if len(e.Reasons) == 0 {
		e.Reasons = append(e.Reasons, "builder requires nothing")
	}
	return e
}
