package timewindow

import (
	"fmt"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

// ParseError says what is wrong with a window, and where: Column counts
// bytes of Input from 1.
type ParseError struct {
	Input  string
	Column int
	Msg    string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("time window %q: at column %d: %s", e.Input, e.Column, e.Msg)
}

// Syntax is the form Parse reads, for error messages and help texts.
const Syntax = `[DAYS] HH:MM-HH:MM [ZONE], e.g. "22:00-06:00", "Mon-Fri 09:00-17:00", "Sat,Sun 00:00-24:00 Europe/Berlin"`

// Parse reads one window:
//
//	[DAYS] HH:MM-HH:MM [ZONE]
//
// DAYS is a comma-separated list of days and ranges of days ("Mon-Fri",
// "Sat,Sun", "Mon,Wed-Fri", "Fri-Mon" wraps past Sunday), by English name,
// short or long, in any case; none means every day. An end that is not
// after the start crosses midnight, into the day after each of DAYS; the
// end may be 24:00. A start equal to the end is refused, since it is
// unclear whether it means never or always. ZONE is an IANA name
// ("Europe/Berlin", "UTC", "Local" for the machine's own), optionally
// written tz=Europe/Berlin; none leaves the zone to whoever reads the
// window. Errors are Invalid and say what is wrong and at which column
// (a *ParseError in their chain).
func Parse(s string) (Window, error) {
	p := parser{in: s}
	w, err := p.window()
	if err != nil {
		return Window{}, drover.Errorf(drover.Invalid, "%w", err)
	}
	return w, nil
}

// ParseList parses each of specs, naming the one that is wrong.
func ParseList(specs []string) ([]Window, error) {
	out := make([]Window, 0, len(specs))
	for _, s := range specs {
		w, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// LoadZone loads an IANA zone by name for a window's default zone, with an
// error that says what a zone is; "local" (any case) is the machine's own.
func LoadZone(name string) (*time.Location, error) {
	if strings.EqualFold(name, "local") {
		return time.Local, nil
	}
	if name == "" || strings.ContainsAny(name, " \t") {
		return nil, drover.Errorf(drover.Invalid, "time zone %q: want an IANA name such as Europe/Berlin or UTC", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, drover.Errorf(drover.Invalid, "time zone %q: want an IANA name such as Europe/Berlin or UTC: %v", name, err)
	}
	return loc, nil
}

// parser reads one window from in; pos is the byte offset it stands at.
type parser struct {
	in  string
	pos int
}

func (p *parser) fail(at int, format string, args ...any) error {
	return &ParseError{Input: p.in, Column: at + 1, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) spaces() {
	for p.pos < len(p.in) && (p.in[p.pos] == ' ' || p.in[p.pos] == '\t') {
		p.pos++
	}
}

func (p *parser) peek() byte {
	if p.pos < len(p.in) {
		return p.in[p.pos]
	}
	return 0
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

func (p *parser) window() (Window, error) {
	var w Window
	p.spaces()
	if p.pos == len(p.in) {
		return w, p.fail(p.pos, "empty: want %s", Syntax)
	}
	if isLetter(p.peek()) {
		days, err := p.days()
		if err != nil {
			return w, err
		}
		w.Days = days.norm()
		p.spaces()
		if !isDigit(p.peek()) {
			return w, p.fail(p.pos, "want a time of day HH:MM after the days, %s", p.found())
		}
	}
	startAt := p.pos
	start, err := p.clock(false)
	if err != nil {
		return w, err
	}
	p.spaces()
	if p.peek() != '-' {
		return w, p.fail(p.pos, "want '-' and the end of the window after its start, %s", p.found())
	}
	p.pos++
	p.spaces()
	end, err := p.clock(true)
	if err != nil {
		return w, err
	}
	if start == end {
		return w, p.fail(startAt, "the window is empty: it starts and ends at %02d:%02d (for all day, write 00:00-24:00)", start/60, start%60)
	}
	if end == 0 {
		end = minutesPerDay // an end at 00:00 is midnight: 24:00
	}
	w.Start, w.End = start, end
	p.spaces()
	if p.pos < len(p.in) {
		if err := p.zone(&w); err != nil {
			return w, err
		}
	}
	return w, nil
}

// found describes what stands at the parser's position, for errors.
func (p *parser) found() string {
	if p.pos >= len(p.in) {
		return "found the end"
	}
	word := p.in[p.pos:]
	if i := strings.IndexAny(word, " \t"); i > 0 {
		word = word[:i]
	}
	return fmt.Sprintf("found %q", word)
}

// days reads DAYS: items separated by commas, each a day or a range.
func (p *parser) days() (Days, error) {
	var d Days
	for {
		p.spaces()
		from, err := p.day()
		if err != nil {
			return 0, err
		}
		p.spaces()
		to := from
		if p.peek() == '-' {
			p.pos++
			p.spaces()
			if to, err = p.day(); err != nil {
				return 0, err
			}
			p.spaces()
		}
		for wd := from; ; wd = (wd + 1) % 7 {
			d |= 1 << wd
			if wd == to {
				break
			}
		}
		if p.peek() != ',' {
			return d, nil
		}
		p.pos++
	}
}

// fullDayNames are the long names, Sunday first.
var fullDayNames = [7]string{"sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"}

func (p *parser) day() (time.Weekday, error) {
	at := p.pos
	for p.pos < len(p.in) && isLetter(p.in[p.pos]) {
		p.pos++
	}
	word := p.in[at:p.pos]
	if word == "" {
		return 0, p.fail(at, "want a day of the week (Mon, Tue, Wed, Thu, Fri, Sat or Sun), %s", p.found())
	}
	lower := strings.ToLower(word)
	for wd := range 7 {
		if lower == strings.ToLower(dayNames[wd]) || lower == fullDayNames[wd] {
			return time.Weekday(wd), nil
		}
	}
	return 0, p.fail(at, "%q is not a day of the week: want Mon, Tue, Wed, Thu, Fri, Sat or Sun", word)
}

// clock reads H:MM or HH:MM as minutes after midnight; 24:00 only when it
// ends a window.
func (p *parser) clock(end bool) (int, error) {
	at := p.pos
	for p.pos < len(p.in) && (isDigit(p.in[p.pos]) || p.in[p.pos] == ':') {
		p.pos++
	}
	s := p.in[at:p.pos]
	what := "start"
	if end {
		what = "end"
	}
	bad := func() (int, error) {
		if s == "" {
			p.pos = at
			return 0, p.fail(at, "want the %s of the window as a time of day HH:MM, %s", what, p.found())
		}
		return 0, p.fail(at, "%q is not a time of day HH:MM (the window's %s)", s, what)
	}
	hh, mm, ok := strings.Cut(s, ":")
	if !ok || len(hh) < 1 || len(hh) > 2 || len(mm) != 2 || strings.Contains(mm, ":") {
		return bad()
	}
	h := int(hh[0] - '0')
	if len(hh) == 2 {
		h = h*10 + int(hh[1]-'0')
	}
	m := int(mm[0]-'0')*10 + int(mm[1]-'0')
	switch {
	case m > 59:
		return bad()
	case h == 24 && m == 0 && end:
		return minutesPerDay, nil
	case h == 24 && m == 0:
		return 0, p.fail(at, "a window cannot start at 24:00; write 00:00")
	case h > 23:
		return bad()
	}
	return h*60 + m, nil
}

// zone reads the rest of the input as the window's zone.
func (p *parser) zone(w *Window) error {
	at := p.pos
	rest := strings.TrimRight(p.in[p.pos:], " \t")
	if len(rest) >= 3 && strings.EqualFold(rest[:3], "tz=") {
		rest, at = rest[3:], at+3
	}
	if rest == "" || !isLetter(rest[0]) || strings.ContainsAny(rest, " \t") {
		return p.fail(at, "want a time zone (an IANA name such as Europe/Berlin) after the window, found %q", rest)
	}
	loc, err := LoadZone(rest)
	if err != nil {
		return p.fail(at, "unknown time zone %q: want an IANA name such as Europe/Berlin or UTC", rest)
	}
	w.Zone, w.loc = rest, loc
	if loc == time.Local {
		w.Zone = "Local"
	}
	p.pos = len(p.in)
	return nil
}
