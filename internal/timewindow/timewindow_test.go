package timewindow

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
)

func mustParse(t *testing.T, s string) Window {
	t.Helper()
	w, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return w
}

func mustSet(t *testing.T, zone *time.Location, specs ...string) Set {
	t.Helper()
	s := Set{Zone: zone}
	for _, spec := range specs {
		s.Windows = append(s.Windows, mustParse(t, spec))
	}
	return s
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("LoadLocation(%q): %v", name, err)
	}
	return loc
}

// at reads "2006-01-02 15:04" (seconds optional) in loc.
func at(t *testing.T, loc *time.Location, s string) time.Time {
	t.Helper()
	layout := "2006-01-02 15:04"
	if strings.Count(s, ":") == 2 {
		layout += ":05"
	}
	v, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func utc(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const mon, tue, wed, thu, fri, sat, sun = 1 << time.Monday, 1 << time.Tuesday, 1 << time.Wednesday, 1 << time.Thursday, 1 << time.Friday, 1 << time.Saturday, 1 << time.Sunday

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Window
		str     string // String(), when it differs from in
		wantErr string
		col     int
	}{
		// Daily windows, as --available has always read them.
		{in: "22:00-07:00", want: Window{Start: 22 * 60, End: 7 * 60}},
		{in: "9:30-17:45", want: Window{Start: 9*60 + 30, End: 17*60 + 45}, str: "09:30-17:45"},
		{in: " 08:00 - 12:00 ", want: Window{Start: 8 * 60, End: 12 * 60}, str: "08:00-12:00"},
		{in: "00:00-24:00", want: Window{Start: 0, End: 24 * 60}},
		{in: "18:00-24:00", want: Window{Start: 18 * 60, End: 24 * 60}},
		{in: "18:00-00:00", want: Window{Start: 18 * 60, End: 24 * 60}, str: "18:00-24:00"},
		// Weekly windows.
		{in: "Wed 08:00-10:00", want: Window{Days: wed, Start: 8 * 60, End: 10 * 60}},
		{in: "Mon-Fri 09:00-17:00", want: Window{Days: mon | tue | wed | thu | fri, Start: 9 * 60, End: 17 * 60}},
		{in: "Sat,Sun 00:00-24:00", want: Window{Days: sat | sun, End: 24 * 60}},
		{in: "sat, SUNDAY 00:00-24:00", want: Window{Days: sat | sun, End: 24 * 60}, str: "Sat,Sun 00:00-24:00"},
		{in: "Mon,Wed-Fri 09:00-12:00", want: Window{Days: mon | wed | thu | fri, Start: 9 * 60, End: 12 * 60}},
		{in: "Mon,Tue,Wed 09:00-12:00", want: Window{Days: mon | tue | wed, Start: 9 * 60, End: 12 * 60}, str: "Mon-Wed 09:00-12:00"},
		{in: "Fri-Mon 20:00-08:00", want: Window{Days: fri | sat | sun | mon, Start: 20 * 60, End: 8 * 60}},
		{in: "Sun-Tue 00:00-24:00", want: Window{Days: sun | mon | tue, End: 24 * 60}},
		{in: "Mon-Sun 10:00-11:00", want: Window{Start: 10 * 60, End: 11 * 60}, str: "10:00-11:00"},
		{in: "Sun-Sat 10:00-11:00", want: Window{Start: 10 * 60, End: 11 * 60}, str: "10:00-11:00"},
		// Zones.
		{in: "Wed 08:00-10:00 Europe/Berlin", want: Window{Days: wed, Start: 8 * 60, End: 10 * 60, Zone: "Europe/Berlin"}},
		{in: "22:00-06:00 tz=America/New_York", want: Window{Start: 22 * 60, End: 6 * 60, Zone: "America/New_York"}, str: "22:00-06:00 America/New_York"},
		{in: "22:00-06:00 UTC", want: Window{Start: 22 * 60, End: 6 * 60, Zone: "UTC"}},
		{in: "22:00-06:00 local", want: Window{Start: 22 * 60, End: 6 * 60, Zone: "Local"}, str: "22:00-06:00 Local"},

		{in: "", wantErr: "empty", col: 1},
		{in: "   ", wantErr: "empty", col: 4},
		{in: "22:00", wantErr: "want '-' and the end of the window", col: 6},
		{in: "22-07", wantErr: `"22" is not a time of day`, col: 1},
		{in: "25:00-07:00", wantErr: `"25:00" is not a time of day`, col: 1},
		{in: "24:00-07:00", wantErr: "cannot start at 24:00", col: 1},
		{in: "22:60-07:00", wantErr: `"22:60" is not a time of day`, col: 1},
		{in: "22:0-07:00", wantErr: "not a time of day", col: 1},
		{in: "22:00-24:01", wantErr: `"24:01" is not a time of day HH:MM (the window's end)`, col: 7},
		{in: "-1:00-07:00", wantErr: "want the start of the window", col: 1},
		{in: "07:00-07:00", wantErr: "is empty", col: 1},
		{in: "Mon 00:00-00:00", wantErr: "is empty", col: 5},
		{in: "Mon-Fxi 09:00-17:00", wantErr: `"Fxi" is not a day of the week`, col: 5},
		{in: "Mon,,Tue 09:00-17:00", wantErr: "want a day of the week", col: 5},
		{in: "Mon-Fri", wantErr: "want a time of day HH:MM after the days, found the end", col: 8},
		{in: "Mon-Fri; 09:00-17:00", wantErr: `after the days, found ";"`, col: 8},
		{in: "Wed 08:00-10:00 Mars/Olympus", wantErr: `unknown time zone "Mars/Olympus"`, col: 17},
		{in: "Wed 08:00-10:00 Europe/Berlin x", wantErr: "want a time zone", col: 17},
		{in: "Wed 08:00-10:00 +02:00", wantErr: "want a time zone", col: 17},
		{in: "Wed 08:00-10:00 tz=", wantErr: "want a time zone", col: 20},
		{in: "08:00-10:00-12:00", wantErr: `want a time zone (an IANA name such as Europe/Berlin) after the window, found "-12:00"`, col: 12},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse = %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				if drover.KindOf(err) != drover.Invalid {
					t.Errorf("kind = %v, want invalid", drover.KindOf(err))
				}
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Column != tt.col || pe.Input != tt.in {
					t.Errorf("ParseError = %+v, want column %d of %q", pe, tt.col, tt.in)
				}
				return
			}
			if err != nil || !got.Equal(tt.want) {
				t.Fatalf("Parse = %+v, %v; want %+v", got, err, tt.want)
			}
			if err := got.Valid(); err != nil {
				t.Errorf("Valid: %v", err)
			}
			str := tt.str
			if str == "" {
				str = tt.in
			}
			if got.String() != str {
				t.Errorf("String = %q, want %q", got.String(), str)
			}
			// It survives JSON, as the worker directory stores it.
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			var back Window
			if err := json.Unmarshal(b, &back); err != nil || !back.Equal(got) {
				t.Errorf("JSON round trip %s = %v, %v", b, back, err)
			}
		})
	}
}

func TestValid(t *testing.T) {
	for _, w := range []Window{{Start: -1, End: 60}, {Start: 1440, End: 60}, {Start: 0, End: 0}, {Start: 0, End: 1441}, {Start: 60, End: 60}, {Start: 0, End: 60, Zone: "Europe/Berlin"}} {
		if err := w.Valid(); err == nil || drover.KindOf(err) != drover.Invalid {
			t.Errorf("Valid(%+v) = %v, want an invalid error", w, err)
		}
	}
}

func TestContains(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	newYork := mustZone(t, "America/New_York")
	// 2026-06-01 is a Monday.
	tests := []struct {
		name string
		set  Set
		t    time.Time
		want bool
	}{
		{"daily, inside", mustSet(t, time.UTC, "09:00-17:00"), utc(t, "2026-06-03T12:00:00Z"), true},
		{"daily, start is inside", mustSet(t, time.UTC, "09:00-17:00"), utc(t, "2026-06-03T09:00:00Z"), true},
		{"daily, end is outside", mustSet(t, time.UTC, "09:00-17:00"), utc(t, "2026-06-03T17:00:00Z"), false},
		{"overnight, before midnight", mustSet(t, time.UTC, "22:00-06:00"), utc(t, "2026-06-01T23:30:00Z"), true},
		{"overnight, after midnight", mustSet(t, time.UTC, "22:00-06:00"), utc(t, "2026-06-02T05:59:59Z"), true},
		{"overnight, the day", mustSet(t, time.UTC, "22:00-06:00"), utc(t, "2026-06-02T12:00:00Z"), false},
		{"weekday window on its day", mustSet(t, time.UTC, "Wed 08:00-10:00"), utc(t, "2026-06-03T09:00:00Z"), true},
		{"weekday window on another day", mustSet(t, time.UTC, "Wed 08:00-10:00"), utc(t, "2026-06-04T09:00:00Z"), false},
		{"office hours on Friday", mustSet(t, time.UTC, "Mon-Fri 09:00-17:00"), utc(t, "2026-06-05T16:59:00Z"), true},
		{"office hours on Saturday", mustSet(t, time.UTC, "Mon-Fri 09:00-17:00"), utc(t, "2026-06-06T10:00:00Z"), false},
		{"weekend, all day Sunday", mustSet(t, time.UTC, "Sat,Sun 00:00-24:00"), utc(t, "2026-06-07T23:59:59Z"), true},
		{"weekend, Monday", mustSet(t, time.UTC, "Sat,Sun 00:00-24:00"), utc(t, "2026-06-08T00:00:00Z"), false},
		// Days are the days a window starts on: Friday night runs into
		// Saturday, Sunday night into Monday (the week wraps).
		{"Friday night on Saturday morning", mustSet(t, time.UTC, "Fri 22:00-06:00"), utc(t, "2026-06-06T05:00:00Z"), true},
		{"Friday night on Friday morning", mustSet(t, time.UTC, "Fri 22:00-06:00"), utc(t, "2026-06-05T05:00:00Z"), false},
		{"Sunday night on Monday morning", mustSet(t, time.UTC, "Sun 22:00-06:00"), utc(t, "2026-06-08T05:00:00Z"), true},
		{"Sunday night on Sunday morning", mustSet(t, time.UTC, "Sun 22:00-06:00"), utc(t, "2026-06-07T05:00:00Z"), false},
		// Zones: a window's own, else the set's.
		{"the set's zone", mustSet(t, newYork, "09:00-17:00"), utc(t, "2026-06-01T12:00:00Z"), false}, // 08:00 EDT
		{"the window's own zone wins", mustSet(t, newYork, "09:00-17:00 UTC"), utc(t, "2026-06-01T12:00:00Z"), true},
		{"no zone is UTC", mustSet(t, nil, "09:00-17:00"), utc(t, "2026-06-01T12:00:00Z"), true},
		{"Wednesday in Berlin is still Tuesday in UTC", mustSet(t, nil, "Wed 00:00-02:00 Europe/Berlin"), utc(t, "2026-06-02T22:30:00Z"), true},
		// Clock changes: 2026-03-29 02:00 CET becomes 03:00 CEST; 2026-10-25
		// 03:00 CEST becomes 02:00 CET.
		{"spring: a window across the skipped hour", mustSet(t, berlin, "01:00-03:30"), utc(t, "2026-03-29T01:15:00Z"), true}, // 03:15 CEST
		{"spring: after it", mustSet(t, berlin, "01:00-03:00"), utc(t, "2026-03-29T01:00:00Z"), false},                        // 03:00 CEST
		{"autumn: the first 02:30", mustSet(t, berlin, "02:00-03:00"), utc(t, "2026-10-25T00:30:00Z"), true},                  // 02:30 CEST
		{"autumn: the second 02:30", mustSet(t, berlin, "02:00-03:00"), utc(t, "2026-10-25T01:30:00Z"), true},                 // 02:30 CET
		{"autumn: between them", mustSet(t, berlin, "02:00-02:30"), utc(t, "2026-10-25T00:45:00Z"), false},                    // 02:45 CEST
		{"summer time in the window's zone", mustSet(t, time.UTC, "Mon-Fri 09:00-17:00 Europe/Berlin"), utc(t, "2026-06-01T07:00:00Z"), true},
		{"winter time in the window's zone", mustSet(t, time.UTC, "Mon-Fri 09:00-17:00 Europe/Berlin"), utc(t, "2026-01-05T07:00:00Z"), false},
		{"two windows, in the second", mustSet(t, time.UTC, "06:00-09:00", "Sat 10:00-12:00"), utc(t, "2026-06-06T11:00:00Z"), true},
		{"no window", Set{}, utc(t, "2026-06-06T11:00:00Z"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.set.Contains(tt.t); got != tt.want {
				t.Errorf("%s contains %s = %v, want %v", tt.set, tt.t, got, tt.want)
			}
		})
	}
}

func TestNext(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	newYork := mustZone(t, "America/New_York")
	tests := []struct {
		name string
		set  Set
		t    time.Time
		want time.Time // zero: never
	}{
		{"inside: its end", mustSet(t, berlin, "Wed 08:00-10:00"), at(t, berlin, "2026-06-03 09:15"), at(t, berlin, "2026-06-03 10:00")},
		{"before: its start", mustSet(t, berlin, "Wed 08:00-10:00"), at(t, berlin, "2026-06-03 07:00"), at(t, berlin, "2026-06-03 08:00")},
		{"after: next week's start", mustSet(t, berlin, "Wed 08:00-10:00"), at(t, berlin, "2026-06-03 10:00"), at(t, berlin, "2026-06-10 08:00")},
		{"at the start: its end", mustSet(t, berlin, "Wed 08:00-10:00"), at(t, berlin, "2026-06-03 08:00"), at(t, berlin, "2026-06-03 10:00")},
		{"seconds into a minute", mustSet(t, time.UTC, "Wed 08:00-10:00"), at(t, time.UTC, "2026-06-03 07:59:59"), at(t, time.UTC, "2026-06-03 08:00")},
		{"Friday evening: Monday morning", mustSet(t, berlin, "Mon-Fri 09:00-17:00"), at(t, berlin, "2026-06-05 18:00"), at(t, berlin, "2026-06-08 09:00")},
		{"overnight: the morning after", mustSet(t, berlin, "22:00-06:00"), at(t, berlin, "2026-06-03 23:00"), at(t, berlin, "2026-06-04 06:00")},
		{"Sunday night ends on Monday", mustSet(t, time.UTC, "Sun 22:00-06:00"), at(t, time.UTC, "2026-06-07 23:00"), at(t, time.UTC, "2026-06-08 06:00")},
		{"adjacent windows end together", mustSet(t, time.UTC, "Sat 00:00-24:00", "Sun 00:00-24:00"), at(t, time.UTC, "2026-06-06 12:00"), at(t, time.UTC, "2026-06-08 00:00")},
		{"overlapping windows end with the last", mustSet(t, time.UTC, "08:00-12:00", "10:00-14:00"), at(t, time.UTC, "2026-06-06 09:00"), at(t, time.UTC, "2026-06-06 14:00")},
		{"windows in two zones", mustSet(t, time.UTC, "09:00-10:00 America/New_York", "15:00-15:30"), at(t, time.UTC, "2026-06-06 12:00"), at(t, time.UTC, "2026-06-06 13:00")},
		{"always never changes", mustSet(t, time.UTC, "00:00-24:00"), at(t, time.UTC, "2026-06-06 12:00"), time.Time{}},
		{"every day all day never changes", mustSet(t, time.UTC, "Mon-Fri 00:00-24:00", "Sat,Sun 00:00-24:00"), at(t, time.UTC, "2026-06-06 12:00"), time.Time{}},
		{"no window never changes", Set{}, at(t, time.UTC, "2026-06-06 12:00"), time.Time{}},

		// Spring, Berlin 2026-03-29: 02:00 CET is 03:00 CEST (01:00 UTC).
		{"spring: a night window ends an hour sooner in real time", mustSet(t, berlin, "22:00-06:00"), utc(t, "2026-03-28T22:00:00Z"), utc(t, "2026-03-29T04:00:00Z")},
		{"spring: a window ending in the skipped hour ends at the change", mustSet(t, berlin, "01:00-02:30"), utc(t, "2026-03-29T00:30:00Z"), utc(t, "2026-03-29T01:00:00Z")},
		{"spring: a window starting in the skipped hour starts at the change", mustSet(t, berlin, "02:30-04:00"), utc(t, "2026-03-29T00:30:00Z"), utc(t, "2026-03-29T01:00:00Z")},
		{"spring: a window inside the skipped hour is skipped that night", mustSet(t, berlin, "02:00-02:30"), utc(t, "2026-03-28T23:00:00Z"), utc(t, "2026-03-30T00:00:00Z")},
		// Autumn, Berlin 2026-10-25: 03:00 CEST is 02:00 CET (01:00 UTC).
		{"autumn: a night window ends an hour later in real time", mustSet(t, berlin, "22:00-06:00"), utc(t, "2026-10-24T21:00:00Z"), utc(t, "2026-10-25T05:00:00Z")},
		{"autumn: the repeated hour is left at the change", mustSet(t, berlin, "02:30-03:30"), utc(t, "2026-10-25T00:45:00Z"), utc(t, "2026-10-25T01:00:00Z")},
		{"autumn: and entered again", mustSet(t, berlin, "02:30-03:30"), utc(t, "2026-10-25T01:00:00Z"), utc(t, "2026-10-25T01:30:00Z")},
		{"autumn: a window spanning the repeated hour lasts it out", mustSet(t, berlin, "01:30-03:30"), utc(t, "2026-10-24T23:45:00Z"), utc(t, "2026-10-25T02:30:00Z")},
		// New York 2026-03-08: 02:00 EST is 03:00 EDT (07:00 UTC).
		{"spring in New York: a weekly window", mustSet(t, newYork, "Sun 01:00-04:00"), utc(t, "2026-03-08T06:30:00Z"), utc(t, "2026-03-08T08:00:00Z")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.set.Next(tt.t)
			if !got.Equal(tt.want) {
				t.Fatalf("%s: Next(%s) = %s, want %s", tt.set, tt.t.UTC(), got.UTC(), tt.want.UTC())
			}
			if !got.IsZero() {
				// Nothing changes before it; it changes at it.
				before := tt.set.Contains(tt.t)
				if tt.set.Contains(got.Add(-time.Nanosecond)) != before || tt.set.Contains(got) == before {
					t.Errorf("Contains does not change at %s", got.UTC())
				}
			}
		})
	}
}

func TestActiveAndFormat(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	s := mustSet(t, berlin, "Mon-Fri 09:00-17:00", "Wed 08:00-10:00 UTC")
	w, ok := s.Active(utc(t, "2026-06-03T07:30:00Z")) // Wednesday 09:30 in Berlin
	if !ok || w.Format(s.Zone) != "Mon-Fri 09:00-17:00 Europe/Berlin" {
		t.Errorf("Active = %v, %v", w.Format(s.Zone), ok)
	}
	w, ok = s.Active(utc(t, "2026-06-03T09:30:00Z")) // Wednesday 11:30 in Berlin, 09:30 UTC
	if !ok || w.Format(s.Zone) != "Mon-Fri 09:00-17:00 Europe/Berlin" {
		t.Errorf("Active = %v, %v", w.Format(s.Zone), ok)
	}
	if _, ok := s.Active(utc(t, "2026-06-06T09:30:00Z")); ok {
		t.Error("active on a Saturday")
	}
	if got := mustParse(t, "Wed 08:00-10:00 UTC").Format(berlin); got != "Wed 08:00-10:00 UTC" {
		t.Errorf("Format = %q", got)
	}
	if got := mustParse(t, "Wed 08:00-10:00").Format(nil); got != "Wed 08:00-10:00 UTC" {
		t.Errorf("Format = %q", got)
	}
	if got := mustParse(t, "Wed 08:00-10:00").Format(time.Local); got != "Wed 08:00-10:00 local time" {
		t.Errorf("Format = %q", got)
	}
}

func TestDaysString(t *testing.T) {
	tests := []struct {
		d    Days
		want string
	}{
		{0, ""},
		{everyDay, ""},
		{mon, "Mon"},
		{mon | tue, "Mon,Tue"},
		{mon | tue | wed | thu | fri, "Mon-Fri"},
		{sat | sun, "Sat,Sun"},
		{mon | sun, "Sun,Mon"},
		{mon | wed | thu | fri | sun, "Sun,Mon,Wed-Fri"},
		{sun | mon | tue, "Sun-Tue"},
		{fri | sat | sun | mon, "Fri-Mon"},
		{sun, "Sun"},
		{sat | sun | tue, "Tue,Sat,Sun"},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("Days(%07b).String() = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestUntil(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	now := at(t, berlin, "2026-06-03 09:15") // a Wednesday
	tests := []struct {
		t    time.Time
		want string
	}{
		{at(t, berlin, "2026-06-03 10:00"), "10:00"},
		{at(t, berlin, "2026-06-04 08:00"), "Thu 08:00"},
		{at(t, berlin, "2026-06-08 09:00"), "Mon 09:00"},
		{at(t, berlin, "2026-06-10 08:00"), "2026-06-10 08:00"},
	}
	for _, tt := range tests {
		if got := Until(now, tt.t, berlin); got != tt.want {
			t.Errorf("Until(%s) = %q, want %q", tt.t, got, tt.want)
		}
	}
	if got := Until(now, at(t, berlin, "2026-06-03 10:00"), nil); got != "08:00" {
		t.Errorf("Until in UTC = %q", got)
	}
}

func TestLoadZone(t *testing.T) {
	if loc, err := LoadZone("Europe/Berlin"); err != nil || loc.String() != "Europe/Berlin" {
		t.Errorf("LoadZone = %v, %v", loc, err)
	}
	if loc, err := LoadZone("LOCAL"); err != nil || loc != time.Local {
		t.Errorf("LoadZone(LOCAL) = %v, %v", loc, err)
	}
	for _, bad := range []string{"", "Mars/Olympus", "Europe/ Berlin", "../etc/passwd"} {
		if _, err := LoadZone(bad); err == nil || drover.KindOf(err) != drover.Invalid || !strings.Contains(err.Error(), "IANA") {
			t.Errorf("LoadZone(%q) = %v, want an invalid error", bad, err)
		}
	}
}
