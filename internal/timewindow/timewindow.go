// Package timewindow parses and evaluates time windows: spans of wall-clock
// time on some or all days of the week, in a time zone, such as
// "22:00-06:00", "Mon-Fri 09:00-17:00", "Sat,Sun 00:00-24:00" or
// "Wed 08:00-10:00 Europe/Berlin". A worker's owner gives them to `drover
// worker run --available` (when the worker builds); the master's config
// gives them to drover.worker(downtime = [...]) (when it must not).
//
// It is a leaf: the worker's agent and the master both use it, so it
// imports nothing of Drover's but the root vocabulary, and the agent stays
// an island.
//
// Windows are wall-clock times: "09:00-17:00" in Europe/Berlin is 09:00 to
// 17:00 on the clocks in Berlin, winter and summer. On the night a clock
// springs forward, a window's times in the skipped hour do not occur (a
// window 01:00-03:00 lasts one hour that night); on the night it falls back,
// the repeated hour is inside a window twice. Evaluation is pure: every
// function takes the time it is asked about.
package timewindow

import (
	"fmt"
	"strings"
	"time"

	// Windows name IANA zones; Windows machines and minimal containers
	// have no zoneinfo database, so the binary carries one (about 450 KB).
	// time.LoadLocation still prefers the system's.
	_ "time/tzdata"

	"github.com/drover-ci/drover"
)

const (
	minutesPerDay = 24 * 60
	day           = 24 * time.Hour
	week          = 7 * day
	// horizon bounds the search for a set's next change: windows repeat
	// every week, so a set whose state has not changed in two weeks (and
	// a clock change) never changes.
	horizon = 15 * day
	// maxSteps bounds the same search in steps, each a window's edge or
	// a clock change: far more than two weeks of any real set hold.
	maxSteps = 10000
)

// Days is a set of days of the week, bit time.Weekday; zero means every
// day.
type Days uint8

// everyDay has a bit for each of the seven days.
const everyDay Days = 1<<7 - 1

// Has reports whether d holds day wd (every day when d is zero).
func (d Days) Has(wd time.Weekday) bool { return d == 0 || d&(1<<wd) != 0 }

// dayNames are the short names, Sunday first as time.Weekday counts.
var dayNames = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

// String writes d with runs of three or more days as ranges, Monday
// first unless a run wraps past Sunday: "Mon-Fri", "Sat,Sun", "Mon,Wed-Fri",
// "Fri-Mon"; "" for every day.
func (d Days) String() string {
	d = d.norm()
	if d == 0 {
		return ""
	}
	// Start at the first day, Monday first, of the run that holds the
	// first day set: a run wrapping past Sunday begins before Monday.
	first := time.Monday
	for !d.Has(first) {
		first = (first + 1) % 7
	}
	for d.Has((first + 6) % 7) {
		first = (first + 6) % 7
	}
	var parts []string
	for i := 0; i < 7; {
		wd := (first + time.Weekday(i)) % 7
		if !d.Has(wd) {
			i++
			continue
		}
		j := i
		for j+1 < 7 && d.Has((first+time.Weekday(j+1))%7) {
			j++
		}
		end := (first + time.Weekday(j)) % 7
		switch {
		case j == i:
			parts = append(parts, dayNames[wd])
		case j == i+1:
			parts = append(parts, dayNames[wd], dayNames[end])
		default:
			parts = append(parts, dayNames[wd]+"-"+dayNames[end])
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// Window is one time window: from Start to End on each of Days, read in
// Zone. A window whose End is not after its Start crosses midnight and
// ends the next day; Days are the days it starts on.
type Window struct {
	Days  Days
	Start int // minutes after midnight, 0 to 1439
	End   int // minutes after midnight, 1 to 1440 (24:00)
	// Zone is the IANA name the window was given ("Europe/Berlin"); ""
	// reads it in the zone of whoever evaluates it (see Set.Zone).
	Zone string
	loc  *time.Location // Zone loaded; nil when Zone is ""
}

// Valid checks w's fields, for windows built or decoded other than by
// Parse.
func (w Window) Valid() error {
	switch {
	case w.Start < 0 || w.Start >= minutesPerDay:
		return drover.Errorf(drover.Invalid, "time window %s: its start is not a time of day", w)
	case w.End <= 0 || w.End > minutesPerDay:
		return drover.Errorf(drover.Invalid, "time window %s: its end is not a time of day", w)
	case w.Start == w.End:
		return drover.Errorf(drover.Invalid, "time window %s is empty: its start and end are the same time", w)
	case w.Zone != "" && w.loc == nil:
		return drover.Errorf(drover.Invalid, "time window %s: its zone was not loaded (use Parse)", w)
	}
	return nil
}

// Equal reports whether w and v are the same window.
func (w Window) Equal(v Window) bool {
	return w.Days.norm() == v.Days.norm() && w.Start == v.Start && w.End == v.End && w.Zone == v.Zone
}

func (d Days) norm() Days {
	if d&everyDay == everyDay {
		return 0
	}
	return d & everyDay
}

// String writes w as Parse reads it: "Mon-Fri 09:00-17:00", with its zone
// when it was given one.
func (w Window) String() string {
	var b strings.Builder
	if days := w.Days.String(); days != "" {
		b.WriteString(days)
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "%02d:%02d-%02d:%02d", w.Start/60, w.Start%60, w.End/60, w.End%60)
	if w.Zone != "" {
		b.WriteByte(' ')
		b.WriteString(w.Zone)
	}
	return b.String()
}

// Format is String naming the zone w is read in when it has none of its
// own: "Wed 08:00-10:00 UTC".
func (w Window) Format(def *time.Location) string {
	if w.Zone == "" {
		w.Zone = zoneName(def)
	}
	return w.String()
}

// zoneName is loc's name as people read it; nil is UTC.
func zoneName(loc *time.Location) string {
	if loc == nil {
		return "UTC"
	}
	if loc == time.Local {
		return "local time"
	}
	return loc.String()
}

// MarshalText writes w as String does, for JSON files and answers.
func (w Window) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// UnmarshalText reads what Parse reads.
func (w *Window) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*w = v
	return nil
}

// Location is the zone w is read in: its own, else def, else UTC.
func (w Window) Location(def *time.Location) *time.Location {
	switch {
	case w.loc != nil:
		return w.loc
	case def != nil:
		return def
	}
	return time.UTC
}

// always reports whether w holds every instant.
func (w Window) always() bool {
	return w.Days.norm() == 0 && w.Start == 0 && w.End == minutesPerDay
}

// length is how long w lasts in wall-clock time.
func (w Window) length() time.Duration {
	end := w.End
	if end <= w.Start {
		end += minutesPerDay
	}
	return time.Duration(end-w.Start) * time.Minute
}

// wallPos is where the wall clock of lt stands in its week, from Sunday
// 00:00.
func wallPos(lt time.Time) time.Duration {
	h, m, s := lt.Clock()
	return time.Duration(lt.Weekday())*day + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
		time.Duration(s)*time.Second + time.Duration(lt.Nanosecond())
}

// mod is a modulo b, in [0, b).
func mod(a, b time.Duration) time.Duration {
	a %= b
	if a < 0 {
		a += b
	}
	return a
}

// Contains reports whether t falls in w, read in w's zone, or def when w
// has none (nil: UTC). A window holds its start and not its end.
func (w Window) Contains(t time.Time, def *time.Location) bool {
	return w.containsPos(wallPos(t.In(w.Location(def))))
}

func (w Window) containsPos(pos time.Duration) bool {
	start, length := time.Duration(w.Start)*time.Minute, w.length()
	for wd := time.Sunday; wd <= time.Saturday; wd++ {
		if w.Days.Has(wd) && mod(pos-(time.Duration(wd)*day+start), week) < length {
			return true
		}
	}
	return false
}

// next returns the first instant after t at which Contains changes, zero
// if it never does. Between two of its zone's clock changes wall time
// runs with real time, so the next edge is found by arithmetic; at a
// clock change the wall clock jumps, and the window is looked at again
// from there.
func (w Window) next(t time.Time, def *time.Location) time.Time {
	if w.always() {
		return time.Time{}
	}
	loc := w.Location(def)
	in := w.Contains(t, def)
	start, length := time.Duration(w.Start)*time.Minute, w.length()
	cur := t
	for range maxSteps {
		lt := cur.In(loc)
		pos := wallPos(lt)
		step := week
		for wd := time.Sunday; wd <= time.Saturday; wd++ {
			if !w.Days.Has(wd) {
				continue
			}
			for _, edge := range [2]time.Duration{time.Duration(wd)*day + start, time.Duration(wd)*day + start + length} {
				if d := mod(edge-pos, week); d > 0 && d < step {
					step = d
				}
			}
		}
		cand := cur.Add(step)
		if _, zoneEnd := lt.ZoneBounds(); !zoneEnd.IsZero() && !cand.Before(zoneEnd) {
			cand = zoneEnd
		}
		if w.Contains(cand, def) != in {
			return cand
		}
		if cand.Sub(t) > horizon {
			return time.Time{}
		}
		cur = cand
	}
	return time.Time{}
}

// Set is a list of windows, read together: an instant is in the set when
// it is in any of them.
type Set struct {
	Windows []Window
	// Zone is where windows without a zone of their own are read; nil is
	// UTC.
	Zone *time.Location
}

// IsZero reports whether s has no window.
func (s Set) IsZero() bool { return len(s.Windows) == 0 }

// Active returns the first window of s that holds t.
func (s Set) Active(t time.Time) (Window, bool) {
	for _, w := range s.Windows {
		if w.Contains(t, s.Zone) {
			return w, true
		}
	}
	return Window{}, false
}

// Contains reports whether any window of s holds t.
func (s Set) Contains(t time.Time) bool {
	_, ok := s.Active(t)
	return ok
}

// Next returns the first instant after t at which Contains changes: when
// the windows holding t all end, or when the first of the others starts.
// Zero means it never changes (no window, or windows that hold every
// instant).
func (s Set) Next(t time.Time) time.Time {
	if len(s.Windows) == 0 {
		return time.Time{}
	}
	in := s.Contains(t)
	cur := t
	for range maxSteps {
		var first time.Time
		for _, w := range s.Windows {
			if n := w.next(cur, s.Zone); !n.IsZero() && (first.IsZero() || n.Before(first)) {
				first = n
			}
		}
		if first.IsZero() || first.Sub(t) > horizon {
			return time.Time{}
		}
		if s.Contains(first) != in {
			return first
		}
		cur = first // an edge of one window inside another: go on
	}
	return time.Time{}
}

// String lists the windows: "Mon-Fri 09:00-17:00, Sat 10:00-12:00".
func (s Set) String() string {
	parts := make([]string, len(s.Windows))
	for i, w := range s.Windows {
		parts[i] = w.String()
	}
	return strings.Join(parts, ", ")
}

// Until says when, seen from now, the instant t comes, in the clock of
// loc (nil: UTC), as briefly as is clear: "10:00" later today, "Thu
// 10:00" within the week, "2026-03-10 10:00" beyond it.
func Until(now, t time.Time, loc *time.Location) string {
	if loc == nil {
		loc = time.UTC
	}
	n, lt := now.In(loc), t.In(loc)
	ny, nm, nd := n.Date()
	ty, tm, td := lt.Date()
	switch {
	case ny == ty && nm == tm && nd == td:
		return lt.Format("15:04")
	case lt.Sub(n) < 6*day:
		return lt.Format("Mon 15:04")
	}
	return lt.Format("2006-01-02 15:04")
}
