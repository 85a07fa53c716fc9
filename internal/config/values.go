package config

import (
	"fmt"
	"maps"
	"slices"

	"go.starlark.net/starlark"

	"github.com/drover-ci/drover"
)

// sourceValue is what drover.git returns: an opaque handle on a recorded
// source that checkout() and scheduler() accept.
type sourceValue struct {
	src *drover.GitSource
}

var _ starlark.HasAttrs = (*sourceValue)(nil)

func (v *sourceValue) String() string        { return fmt.Sprintf("<drover.source %q>", v.src.Name) }
func (v *sourceValue) Type() string          { return "drover.source" }
func (v *sourceValue) Freeze()               {}
func (v *sourceValue) Truth() starlark.Bool  { return true }
func (v *sourceValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable: %s", v.Type()) }
func (v *sourceValue) AttrNames() []string   { return []string{"branches", "name", "url"} }

func (v *sourceValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "name":
		return starlark.String(v.src.Name), nil
	case "url":
		return starlark.String(v.src.URL), nil
	case "branches":
		t := make(starlark.Tuple, len(v.src.Branches))
		for i, b := range v.src.Branches {
			t[i] = starlark.String(b)
		}
		return t, nil
	}
	return nil, nil // starlark reports "no such field"
}

// stepValue is what drover.shell and drover.checkout return. It may be put
// in several builders' step lists, so builders take a deep copy.
type stepValue struct {
	spec drover.StepSpec
	site site
}

var _ starlark.HasAttrs = (*stepValue)(nil)

func (v *stepValue) String() string        { return fmt.Sprintf("<drover.step %q>", v.spec.Name) }
func (v *stepValue) Type() string          { return "drover.step" }
func (v *stepValue) Freeze()               {}
func (v *stepValue) Truth() starlark.Bool  { return true }
func (v *stepValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable: %s", v.Type()) }
func (v *stepValue) AttrNames() []string   { return []string{"kind", "name"} }

func (v *stepValue) Attr(name string) (starlark.Value, error) {
	switch name {
	case "name":
		return starlark.String(v.spec.Name), nil
	case "kind":
		return starlark.String(v.spec.Kind), nil
	}
	return nil, nil
}

// cloneStep deep-copies s so that no two builders share maps or slices.
func cloneStep(s drover.StepSpec) drover.StepSpec {
	s.Command = slices.Clone(s.Command)
	s.Env = maps.Clone(s.Env)
	s.DecodeRC = maps.Clone(s.DecodeRC)
	s.When = slices.Clone(s.When)
	s.Extract = maps.Clone(s.Extract)
	s.Locks = slices.Clone(s.Locks)
	if s.Source != nil {
		src := *s.Source
		src.Branches = slices.Clone(src.Branches)
		s.Source = &src
	}
	return s
}
