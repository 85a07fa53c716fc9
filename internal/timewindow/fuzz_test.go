package timewindow

import (
	"errors"
	"testing"
	"time"
)

// FuzzParse feeds Parse what owners type on command lines and operators in
// configs. Whatever it is given, Parse returns a window or a *ParseError
// pointing inside the input; a window prints back to itself; and the
// evaluator, at any instant, finds a next change at which the window's
// state really changes, and nothing before it. The seed corpus is in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"22:00-07:00", "Mon-Fri 09:00-17:00", "Sat,Sun 00:00-24:00 Europe/Berlin"} {
		f.Add(s, int64(1774746000)) // 2026-03-29T01:00:00Z, Berlin's clock change
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		w, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) = %v, not a *ParseError", s, err)
			}
			if pe.Column < 1 || pe.Column > len(s)+1 {
				t.Fatalf("Parse(%q): column %d is outside the input", s, pe.Column)
			}
			return
		}
		if err := w.Valid(); err != nil {
			t.Fatalf("Parse(%q) = %+v, which is not valid: %v", s, w, err)
		}
		back, err := Parse(w.String())
		if err != nil || !back.Equal(w) || back.String() != w.String() {
			t.Fatalf("Parse(%q).String() = %q, which parses as %+v, %v", s, w.String(), back, err)
		}
		// Any instant from 1900 to 2200.
		at := time.Unix(-2208988800+mod64(unix, 9467280000), 0)
		set := Set{Windows: []Window{w}, Zone: berlin}
		in := set.Contains(at)
		next := set.Next(at)
		if next.IsZero() {
			if !w.always() {
				t.Fatalf("%s never changes after %s", w, at)
			}
			return
		}
		if !next.After(at) {
			t.Fatalf("%s: Next(%s) = %s, not after it", w, at, next)
		}
		if set.Contains(next) == in || set.Contains(next.Add(-time.Nanosecond)) != in {
			t.Fatalf("%s: Next(%s) = %s, where nothing changes", w, at, next)
		}
		if mid := at.Add(next.Sub(at) / 2); set.Contains(mid) != in {
			t.Fatalf("%s: changes at %s, before Next(%s) = %s", w, mid, at, next)
		}
	})
}

func mod64(a, b int64) int64 {
	a %= b
	if a < 0 {
		a += b
	}
	return a
}
