package agent

import (
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/timewindow"
)

func mustWindows(t *testing.T, specs ...string) []timewindow.Window {
	t.Helper()
	ws, err := timewindow.ParseList(specs)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

func mustLocation(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("LoadLocation(%q): %v", name, err)
	}
	return loc
}

func TestEvaluate(t *testing.T) {
	paris := mustLocation(t, "Europe/Paris")
	newYork := mustLocation(t, "America/New_York")
	nights := mustWindows(t, "22:00-07:00")
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	noLoad := errors.New("no load average here")
	tests := []struct {
		name       string
		s          settings
		now        time.Time
		load       float64
		loadErr    error
		want       drover.Availability
		wantReason string
		wantSource Source
	}{
		{
			name: "nothing set", now: utc("2026-06-01T12:00:00Z"),
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			name: "inside a window crossing midnight, before midnight",
			s:    settings{sched: Schedule{Windows: nights}, loc: time.UTC}, now: utc("2026-06-01T23:30:00Z"),
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			name: "inside a window crossing midnight, after midnight",
			s:    settings{sched: Schedule{Windows: nights}, loc: time.UTC}, now: utc("2026-06-02T06:59:59Z"),
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			name: "a window's start is inside",
			s:    settings{sched: Schedule{Windows: nights}, loc: time.UTC}, now: utc("2026-06-01T22:00:00Z"),
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			name: "a window's end is outside",
			s:    settings{sched: Schedule{Windows: nights}, loc: time.UTC}, now: utc("2026-06-02T07:00:00Z"),
			want: drover.Offline, wantReason: "outside 22:00-07:00 until 22:00", wantSource: SourceWindow,
		},
		{
			name: "outside a window crossing midnight",
			s:    settings{sched: Schedule{Windows: nights}, loc: time.UTC}, now: utc("2026-06-01T12:00:00Z"),
			want: drover.Offline, wantReason: "outside 22:00-07:00 until 22:00", wantSource: SourceWindow,
		},
		{
			name: "between two windows",
			s:    settings{sched: Schedule{Windows: mustWindows(t, "06:00-09:00", "18:00-24:00")}, loc: time.UTC}, now: utc("2026-06-01T12:00:00Z"),
			want: drover.Offline, wantReason: "outside 06:00-09:00, 18:00-24:00 until 18:00", wantSource: SourceWindow,
		},
		{
			name: "in the second of two windows",
			s:    settings{sched: Schedule{Windows: mustWindows(t, "06:00-09:00", "18:00-24:00")}, loc: time.UTC}, now: utc("2026-06-01T23:59:00Z"),
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			// 12:00 UTC is 08:00 in New York (EDT): outside 09:00-17:00
			// there, though inside it in UTC.
			name: "windows are read in their time zone",
			s:    settings{sched: Schedule{Windows: mustWindows(t, "09:00-17:00")}, loc: newYork}, now: utc("2026-06-01T12:00:00Z"),
			want: drover.Offline, wantReason: "outside 09:00-17:00 until 09:00", wantSource: SourceWindow,
		},
		{
			// Paris moves to summer time at 02:00 on 2026-03-29. At 05:30
			// UTC the day before, it is 06:30 in Paris: inside 22:00-07:00.
			name: "DST change: winter time the day before",
			s:    settings{sched: Schedule{Windows: nights}, loc: paris}, now: utc("2026-03-28T05:30:00Z"),
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			// The same UTC time on the change day is 07:30 in Paris.
			name: "DST change: summer time on the day",
			s:    settings{sched: Schedule{Windows: nights}, loc: paris}, now: utc("2026-03-29T05:30:00Z"),
			want: drover.Offline, wantReason: "outside 22:00-07:00 until 22:00", wantSource: SourceWindow,
		},
		{
			// 01:30 UTC on the change day is 03:30 CEST: the skipped hour
			// does not confuse a window that spans it.
			name: "DST change: just after the skipped hour",
			s:    settings{sched: Schedule{Windows: mustWindows(t, "03:00-04:00")}, loc: paris}, now: utc("2026-03-29T01:30:00Z"),
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			name: "DST change: autumn, back to winter time",
			s:    settings{sched: Schedule{Windows: mustWindows(t, "02:00-03:00")}, loc: paris}, now: utc("2026-10-25T01:30:00Z"), // 02:30 CET
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			// 2026-06-06 is a Saturday.
			name: "a weekly window: outside it at the weekend",
			s:    settings{sched: Schedule{Windows: mustWindows(t, "Mon-Fri 09:00-17:00")}, loc: time.UTC}, now: utc("2026-06-06T12:00:00Z"),
			want: drover.Offline, wantReason: "outside Mon-Fri 09:00-17:00 until Mon 09:00", wantSource: SourceWindow,
		},
		{
			name: "a weekly window: inside it on a weekday",
			s:    settings{sched: Schedule{Windows: mustWindows(t, "Mon-Fri 09:00-17:00")}, loc: time.UTC}, now: utc("2026-06-05T16:59:00Z"),
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			// 21:30 UTC on Friday is 23:30 in Berlin: still Friday there.
			name: "a window's own zone wins over the worker's",
			s:    settings{sched: Schedule{Windows: mustWindows(t, "Sat,Sun 00:00-24:00 Europe/Berlin")}, loc: time.UTC}, now: utc("2026-06-05T21:30:00Z"),
			want: drover.Offline, wantReason: "outside Sat,Sun 00:00-24:00 Europe/Berlin until Sat 00:00", wantSource: SourceWindow,
		},
		{
			name: "a window's own zone: Saturday in Berlin",
			s:    settings{sched: Schedule{Windows: mustWindows(t, "Sat,Sun 00:00-24:00 Europe/Berlin")}, loc: time.UTC}, now: utc("2026-06-05T22:30:00Z"),
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			name: "load above the ceiling: reluctant",
			s:    settings{sched: Schedule{MaxLoad: 6}}, now: utc("2026-06-01T12:00:00Z"), load: 7.1,
			want: drover.Reluctant, wantReason: "load 7.10 above 6", wantSource: SourceLoad,
		},
		{
			name: "load above the ceiling: offline when asked",
			s:    settings{sched: Schedule{MaxLoad: 2.5, OverLoad: drover.Offline}}, now: utc("2026-06-01T12:00:00Z"), load: 3,
			want: drover.Offline, wantReason: "load 3.00 above 2.5", wantSource: SourceLoad,
		},
		{
			name: "load at the ceiling is not above it",
			s:    settings{sched: Schedule{MaxLoad: 6}}, now: utc("2026-06-01T12:00:00Z"), load: 6,
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			name: "load below the ceiling",
			s:    settings{sched: Schedule{MaxLoad: 6}}, now: utc("2026-06-01T12:00:00Z"), load: 0.5,
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			name: "unknown load: the ceiling is ignored",
			s:    settings{sched: Schedule{MaxLoad: 6}}, now: utc("2026-06-01T12:00:00Z"), load: 99, loadErr: noLoad,
			want: drover.Eager, wantSource: SourceDefault,
		},
		{
			name: "outside the window wins over the load",
			s:    settings{sched: Schedule{Windows: nights, MaxLoad: 6}, loc: time.UTC}, now: utc("2026-06-01T12:00:00Z"), load: 7,
			want: drover.Offline, wantReason: "outside 22:00-07:00 until 22:00", wantSource: SourceWindow,
		},
		{
			name: "inside the window, over the load",
			s:    settings{sched: Schedule{Windows: nights, MaxLoad: 6}, loc: time.UTC}, now: utc("2026-06-01T23:00:00Z"), load: 7,
			want: drover.Reluctant, wantReason: "load 7.00 above 6", wantSource: SourceLoad,
		},
		{
			name: "manual wins over a window",
			s: settings{
				manual: &ManualSetting{Availability: drover.Eager, Reason: "come on in"},
				sched:  Schedule{Windows: nights, MaxLoad: 1}, loc: time.UTC,
			},
			now: utc("2026-06-01T12:00:00Z"), load: 7,
			want: drover.Eager, wantReason: "come on in", wantSource: SourceManual,
		},
		{
			name: "manual without a reason",
			s:    settings{manual: &ManualSetting{Availability: drover.Draining}}, now: utc("2026-06-01T12:00:00Z"),
			want: drover.Draining, wantReason: "set by the owner", wantSource: SourceManual,
		},
		{
			name: "auto (no manual setting) leaves it to the schedule",
			s:    settings{manual: nil, sched: Schedule{Windows: nights}, loc: time.UTC}, now: utc("2026-06-01T12:00:00Z"),
			want: drover.Offline, wantReason: "outside 22:00-07:00 until 22:00", wantSource: SourceWindow,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason, src := evaluate(tt.s, tt.now, tt.load, tt.loadErr)
			if got != tt.want || reason != tt.wantReason || src != tt.wantSource {
				t.Errorf("evaluate = %s, %q, %s; want %s, %q, %s", got, reason, src, tt.want, tt.wantReason, tt.wantSource)
			}
		})
	}
}

func TestParseManual(t *testing.T) {
	now := time.Date(2026, 6, 1, 7, 0, 0, 0, time.UTC)
	tests := []struct {
		state, reason string
		want          *ManualSetting
		wantErr       string
	}{
		{state: "offline", reason: " office hours ", want: &ManualSetting{Availability: drover.Offline, Reason: "office hours", SetAt: now}},
		{state: "eager", want: &ManualSetting{Availability: drover.Eager, SetAt: now}},
		{state: "auto", want: nil},
		{state: "auto", reason: "why", wantErr: "makes no sense with auto"},
		{state: "sleepy", wantErr: `unknown availability "sleepy"`},
		{state: "offline", reason: strings.Repeat("x", maxReasonLen+1), wantErr: "keep it under"},
	}
	for _, tt := range tests {
		t.Run(tt.state+"/"+tt.reason, func(t *testing.T) {
			got, err := parseManual(tt.state, tt.reason, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || drover.KindOf(err) != drover.Invalid {
					t.Fatalf("parseManual = %v, %v; want an invalid error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
				t.Errorf("parseManual = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestScheduleValidation(t *testing.T) {
	tests := []struct {
		name    string
		s       Schedule
		wantLoc string
		wantErr string
	}{
		{name: "zero is local", s: Schedule{}, wantLoc: "Local"},
		{name: "named zone", s: Schedule{Timezone: "Europe/Paris"}, wantLoc: "Europe/Paris"},
		{name: "local by name", s: Schedule{Timezone: "local"}, wantLoc: "Local"},
		{name: "unknown zone", s: Schedule{Timezone: "Mars/Olympus_Mons"}, wantErr: "time zone"},
		{name: "negative ceiling", s: Schedule{MaxLoad: -1}, wantErr: "load ceiling"},
		{name: "NaN ceiling", s: Schedule{MaxLoad: math.NaN()}, wantErr: "load ceiling"},
		{name: "draining over load", s: Schedule{MaxLoad: 4, OverLoad: drover.Draining}, wantErr: "want reluctant or offline"},
		{name: "bad stored window", s: Schedule{Windows: []timewindow.Window{{Start: 60, End: 60}}}, wantErr: "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc, err := tt.s.location()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || drover.KindOf(err) != drover.Invalid {
					t.Fatalf("location = %v, %v; want an invalid error containing %q", loc, err, tt.wantErr)
				}
				return
			}
			if err != nil || loc.String() != tt.wantLoc {
				t.Fatalf("location = %v, %v; want %s", loc, err, tt.wantLoc)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		st   AvailabilityStatus
		want string
	}{
		{AvailabilityStatus{Availability: drover.Eager, Source: SourceDefault}, "eager"},
		{AvailabilityStatus{Availability: drover.Offline, Reason: "outside 22:00-07:00", Source: SourceWindow}, "offline: outside 22:00-07:00 (time window)"},
		{AvailabilityStatus{Availability: drover.Reluctant, Reason: "load 7.10 above 6", Source: SourceLoad}, "reluctant: load 7.10 above 6 (load ceiling)"},
		{AvailabilityStatus{Availability: drover.Draining, Reason: "set by the owner", Source: SourceManual}, "draining: set by the owner (set by hand; `auto` clears it)"},
	}
	for _, tt := range tests {
		if got := tt.st.Summary(); got != tt.want {
			t.Errorf("Summary = %q, want %q", got, tt.want)
		}
	}
}

func TestParseLoadavg(t *testing.T) {
	tests := []struct {
		name    string
		parse   func([]byte) (float64, error)
		in      string
		want    float64
		wantErr bool
	}{
		{"proc", parseProcLoadavg, "0.52 0.58 0.59 1/467 12345\n", 0.52, false},
		{"proc busy", parseProcLoadavg, "17.05 9.58 4.59 12/467 12345\n", 17.05, false},
		{"proc empty", parseProcLoadavg, "", 0, true},
		{"proc garbage", parseProcLoadavg, "abc 1 2", 0, true},
		{"sysctl", parseSysctlLoadavg, "{ 1.92 1.81 1.77 }\n", 1.92, false},
		{"sysctl no braces", parseSysctlLoadavg, "2.50 1.81 1.77", 2.5, false},
		{"sysctl empty", parseSysctlLoadavg, "{ }", 0, true},
		{"sysctl negative", parseSysctlLoadavg, "{ -1 0 0 }", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parse(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSystemLoadAverage(t *testing.T) {
	load, err := systemLoadAverage()
	switch {
	case err != nil && (runtime.GOOS == "linux" || runtime.GOOS == "darwin" || runtime.GOOS == "freebsd"):
		t.Fatalf("systemLoadAverage: %v", err)
	case err == nil && load < 0:
		t.Errorf("load = %v", load)
	}
}
