package config

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.starlark.net/starlark"
)

// Name syntaxes. They are kept narrow because names end up in URLs, file
// names on workers, metrics labels and shell environments.
var (
	builderNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]*$`)
	workerNameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	factNameRE    = regexp.MustCompile(`^[a-z0-9_.-]+$`)
	propNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
	classNameRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	envNameRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// durationUnits are the units a duration string may use, in nanoseconds.
// Days are allowed because log horizons are naturally said in days.
var durationUnits = map[string]float64{
	"ms": float64(time.Millisecond),
	"s":  float64(time.Second),
	"m":  float64(time.Minute),
	"h":  float64(time.Hour),
	"d":  float64(24 * time.Hour),
}

// toDuration reads a duration: a string such as "90s", "2h30m" or "1d", or
// an int or float number of seconds. Negative durations are refused.
func toDuration(v starlark.Value) (time.Duration, error) {
	switch v := v.(type) {
	case starlark.String:
		return parseDuration(string(v))
	case starlark.Int:
		n, ok := v.Int64()
		if !ok || n > math.MaxInt64/int64(time.Second) {
			return 0, fmt.Errorf("duration %s seconds is too long", v)
		}
		if n < 0 {
			return 0, fmt.Errorf("duration %s must not be negative", v)
		}
		return time.Duration(n) * time.Second, nil
	case starlark.Float:
		return secondsToDuration(float64(v), v.String())
	}
	return 0, fmt.Errorf("want a duration like \"90s\" or a number of seconds, got %s", v.Type())
}

func secondsToDuration(sec float64, text string) (time.Duration, error) {
	switch {
	case math.IsNaN(sec) || math.IsInf(sec, 0):
		return 0, fmt.Errorf("duration %s is not a number of seconds", text)
	case sec < 0:
		return 0, fmt.Errorf("duration %s must not be negative", text)
	case sec*float64(time.Second) >= math.MaxInt64:
		return 0, fmt.Errorf("duration %s is too long", text)
	}
	return time.Duration(math.Round(sec * float64(time.Second))), nil
}

// parseDuration parses a sequence of number-unit pairs ("1d12h", "1.5m"),
// or a bare number of seconds.
func parseDuration(text string) (time.Duration, error) {
	s := strings.TrimSpace(text)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("duration %q must not be negative", text)
	}
	if bareNumberRE.MatchString(s) {
		sec, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q", text)
		}
		return secondsToDuration(sec, strconv.Quote(text))
	}
	var total float64
	for s != "" {
		i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
		if i <= 0 {
			return 0, fmt.Errorf("bad duration %q (want e.g. \"90s\", \"2h30m\" or \"1d\")", text)
		}
		n, err := strconv.ParseFloat(s[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q (want e.g. \"90s\", \"2h30m\" or \"1d\")", text)
		}
		s = s[i:]
		j := strings.IndexFunc(s, func(r rune) bool { return r < 'a' || r > 'z' })
		if j < 0 {
			j = len(s)
		}
		unit, ok := durationUnits[s[:j]]
		if !ok {
			return 0, fmt.Errorf("bad duration %q: unknown unit %q (want ms, s, m, h or d)", text, s[:j])
		}
		s = s[j:]
		total += n * unit
		if total >= math.MaxInt64 {
			return 0, fmt.Errorf("duration %q is too long", text)
		}
	}
	return time.Duration(math.Round(total)), nil
}

// sizeUnits are byte multipliers by lower-case unit: SI for kB, MB, GB, TB,
// binary for KiB, MiB, GiB, TiB.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20,
	"gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40, "tib": 1 << 40,
}

var bareNumberRE = regexp.MustCompile(`^[0-9]+(?:\.[0-9]+)?$`)

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)

// toSize reads a byte count: an int, or a string such as "64MiB" or "10MB".
func toSize(v starlark.Value) (int64, error) {
	switch v := v.(type) {
	case starlark.Int:
		n, ok := v.Int64()
		if !ok {
			return 0, fmt.Errorf("size %s is too large", v)
		}
		if n < 0 {
			return 0, fmt.Errorf("size %s must not be negative", v)
		}
		return n, nil
	case starlark.String:
		return parseSize(string(v))
	}
	return 0, fmt.Errorf("want a size like \"64MiB\" or a number of bytes, got %s", v.Type())
}

func parseSize(text string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(text))
	if m == nil {
		return 0, fmt.Errorf("bad size %q (want e.g. \"64MiB\", \"10MB\" or a number of bytes)", text)
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("bad size %q: unknown unit %q (want B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)", text, m[2])
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q", text)
	}
	b := math.Round(n * unit)
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", text)
	}
	return int64(b), nil
}

// toStringList reads a list or tuple of strings.
func toStringList(v starlark.Value) ([]string, error) {
	seq, ok := v.(starlark.Indexable)
	if !ok || isString(v) {
		return nil, fmt.Errorf("want a list of strings, got %s", v.Type())
	}
	out := make([]string, 0, seq.Len())
	for i := range seq.Len() {
		s, ok := starlark.AsString(seq.Index(i))
		if !ok {
			return nil, fmt.Errorf("want a list of strings, but element %d is %s", i, seq.Index(i).Type())
		}
		out = append(out, s)
	}
	return out, nil
}

func isString(v starlark.Value) bool {
	_, ok := v.(starlark.String)
	return ok
}

// pair is one entry of a Starlark dict, in the dict's order.
type pair struct{ key, value string }

// toStringPairs reads a dict of strings to strings, keeping its order. A
// bad entry is reported and skipped, so the good ones can still be checked.
// When scalars is set, int and bool values are accepted and written as
// Starlark prints them, since properties are strings but are often written
// as 1 or True.
func toStringPairs(v starlark.Value, scalars bool) ([]pair, []error) {
	d, ok := v.(*starlark.Dict)
	if !ok {
		return nil, []error{fmt.Errorf("want a dict of strings, got %s", v.Type())}
	}
	var errs []error
	out := make([]pair, 0, d.Len())
	for _, item := range d.Items() {
		k, ok := starlark.AsString(item[0])
		if !ok {
			errs = append(errs, fmt.Errorf("key %s: want a string, got %s", item[0], item[0].Type()))
			continue
		}
		switch x := item[1].(type) {
		case starlark.String:
			out = append(out, pair{k, string(x)})
		case starlark.Int:
			if !scalars {
				errs = append(errs, fmt.Errorf("%q: want a string, got int", k))
				continue
			}
			out = append(out, pair{k, x.String()})
		case starlark.Bool:
			if !scalars {
				errs = append(errs, fmt.Errorf("%q: want a string, got bool", k))
				continue
			}
			out = append(out, pair{k, strconv.FormatBool(bool(x))})
		default:
			errs = append(errs, fmt.Errorf("%q: want a string, got %s", k, item[1].Type()))
		}
	}
	return out, errs
}

// isNone reports whether an optional argument was left out or given as None.
func isNone(v starlark.Value) bool {
	return v == nil || v == starlark.None
}
