package drover

import (
	"strings"
	"testing"
)

func TestRequirementCheck(t *testing.T) {
	facts := Facts{
		"os":    {"linux", "debian", "debian-12"},
		"gcc":   {"12.2.0-14+deb12u1"},
		"cmake": {"v3.22.1"},
		"gtk":   {"3.24.36 (build 5)"},
		"empty": {""},
	}
	tests := []struct {
		fact, constraint string
		kind             ConstraintKind
		want             bool
		why              string
	}{
		{"os", "linux", ConstraintExact, true, "is linux"},
		{"os", "debian-12", ConstraintExact, true, "is debian-12"},
		{"os", "freebsd", ConstraintExact, false, "required freebsd"},
		{"gcc", ">= 12", ConstraintVersion, true, "satisfies"},
		{"gcc", ">= 13", ConstraintVersion, false, "does not satisfy"},
		{"cmake", ">= 3.22, < 4", ConstraintVersion, true, "satisfies"},
		{"gtk", "~> 3.24", ConstraintVersion, true, "satisfies"},
		{"clang", ">= 9", ConstraintVersion, false, "missing"},
		{"gcc", "*", ConstraintPresent, true, "present"},
		{"empty", "*", ConstraintPresent, false, "missing"},
		{"gpu", "!", ConstraintAbsent, true, "absent"},
		{"os", "!", ConstraintAbsent, false, "required absent"},
	}
	for _, tt := range tests {
		r, err := ParseRequirement(tt.fact, tt.constraint)
		if err != nil {
			t.Fatalf("ParseRequirement(%s, %s): %v", tt.fact, tt.constraint, err)
		}
		if r.Kind != tt.kind {
			t.Errorf("%s %s: kind %s, want %s", tt.fact, tt.constraint, r.Kind, tt.kind)
		}
		ok, why := r.Check(facts)
		if ok != tt.want || !strings.Contains(why, tt.why) {
			t.Errorf("%s %q: %v %q, want %v containing %q", tt.fact, tt.constraint, ok, why, tt.want, tt.why)
		}
	}
	if _, err := ParseRequirement("gcc", ">= banana"); KindOf(err) != Invalid {
		t.Errorf("bad constraint: %v", err)
	}
	if _, err := ParseRequirement("", "x"); KindOf(err) != Invalid {
		t.Errorf("empty fact: %v", err)
	}
}

func TestCheckEligibility(t *testing.T) {
	r, _ := ParseRequirement("os", "linux")
	b := &Builder{Name: "b", Requires: []Requirement{r}, Workers: []string{"w1"}}
	if e := CheckEligibility(b, "w1", Facts{"os": {"linux"}}); !e.Eligible || len(e.Reasons) != 2 {
		t.Errorf("w1: %+v", e)
	}
	if e := CheckEligibility(b, "w2", Facts{"os": {"linux"}}); e.Eligible || !strings.Contains(e.Reasons[0], "pinned") {
		t.Errorf("w2: %+v", e)
	}
	if e := CheckEligibility(&Builder{Name: "any"}, "w", nil); !e.Eligible || e.Reasons[0] != "builder requires nothing" {
		t.Errorf("no requirements: %+v", e)
	}
}

func TestWorstAndRoles(t *testing.T) {
	if Worst(Success, Warnings) != Warnings || Worst(Failure, Warnings) != Failure || Worst(Exception, Failure) != Exception {
		t.Error("Worst misorders results")
	}
	if !Retry.IsInfra() || Failure.IsInfra() {
		t.Error("IsInfra")
	}
	if _, err := ParseResult("green"); KindOf(err) != Invalid {
		t.Error("ParseResult accepted nonsense")
	}
	if !RoleAdmin.Allows(RoleOperator) || RoleRead.Allows(RoleOperator) || Role("").Allows(RoleRead) {
		t.Error("role order")
	}
}

func TestErrors(t *testing.T) {
	inner := Errorf(NotFound, "no build %d", 7)
	outer := Errorf(Conflict, "cancel: %w", inner)
	if KindOf(outer) != Conflict || outer.Error() != "cancel: no build 7" {
		t.Errorf("outer = %v (%s)", outer, KindOf(outer))
	}
	if Message(Errorf(Internal, "disk on fire")) != "internal error" {
		t.Error("Message leaks internal details")
	}
}
