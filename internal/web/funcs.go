package web

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

// funcs are the helpers the templates use. Those that depend on the time
// read the server's clock, so tests can pin it.
func (s *server) funcs() template.FuncMap {
	return template.FuncMap{
		"ago":       func(t time.Time) string { return ago(s.now(), t) },
		"abstime":   abstime,
		"isotime":   isotime,
		"dur":       fmtDuration,
		"buildDur":  func(b drover.Build) string { return buildDuration(s.now(), b) },
		"stepDur":   func(st drover.Step) string { return stepDuration(s.now(), st) },
		"short":     shortRev,
		"resClass":  resultClass,
		"buildRes":  buildResult,
		"stepRes":   stepResult,
		"reqRes":    requestResult,
		"pathesc":   url.PathEscape,
		"req":       requirementString,
		"bytes":     fmtBytes,
		"join":      strings.Join,
		"exitCode":  exitCode,
		"firstLine": firstLine,
		"waited":    func(t time.Time) string { return waited(s.now(), t) },
		"shq":       shellQuote,
		"partRes":   func(r drover.Result) status { return status{string(r), resultClass(string(r))} },
		"inc":       func(i int) int { return i + 1 },
		"stepLinks": stepLinks,
	}
}

// ago says how long before now t was, the way people say it.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := now.Sub(t)
	switch {
	case d < -time.Minute:
		return "in " + roughDuration(-d)
	case d < 10*time.Second:
		return "just now"
	case d > 30*24*time.Hour:
		return t.UTC().Format("2006-01-02")
	}
	return roughDuration(d) + " ago"
}

// roughDuration is d in its largest unit, for "3m ago".
func roughDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// abstime is the full time, for title attributes.
func abstime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// isotime is the machine-readable time, for <time datetime>; the live
// script reads it to keep "3m ago" current.
func isotime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// fmtDuration prints d at the precision a build table needs: seconds
// under an hour, minutes above.
func fmtDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "—"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

func buildDuration(now time.Time, b drover.Build) string {
	if b.Started.IsZero() {
		return "—"
	}
	return fmtDuration(b.Duration(now))
}

func stepDuration(now time.Time, st drover.Step) string {
	switch {
	case st.Started.IsZero():
		return ""
	case st.Finished.IsZero():
		return fmtDuration(now.Sub(st.Started))
	}
	return fmtDuration(st.Finished.Sub(st.Started))
}

// shortRev shortens a revision the way git does, leaving names (a branch,
// a tag) that are not long hex strings alone.
func shortRev(rev string) string {
	if len(rev) > 10 && isHex(rev) {
		return rev[:10]
	}
	return rev
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// status is what a badge shows: a word and the CSS class that colours it.
type status struct {
	Text  string
	Class string
}

// resultClass names the CSS class of a result word; the stylesheet has one
// colour per class.
func resultClass(word string) string {
	switch word {
	case "success", "warnings", "failure", "exception", "skipped", "running", "pending":
		return "r-" + word
	case "retry", "cancelled":
		return "r-cancelled"
	}
	return "r-pending"
}

func buildResult(b drover.Build) status {
	if b.State == drover.BuildRunning || b.Result == drover.ResultNone {
		return status{"running", "r-running"}
	}
	return status{string(b.Result), resultClass(string(b.Result))}
}

func stepResult(st drover.Step) status {
	switch {
	case st.State == drover.StepRunning:
		return status{"running", "r-running"}
	case st.State == drover.StepPending || st.Result == drover.ResultNone:
		return status{"pending", "r-pending"}
	}
	return status{string(st.Result), resultClass(string(st.Result))}
}

func requestResult(r drover.BuildRequest) status {
	if r.Result != drover.ResultNone {
		return status{string(r.Result), resultClass(string(r.Result))}
	}
	return status{string(r.State), resultClass(string(r.State))}
}

// requirementString writes a requirement as a config author would.
func requirementString(r drover.Requirement) string {
	switch r.Kind {
	case drover.ConstraintPresent:
		return r.Fact
	case drover.ConstraintAbsent:
		return "!" + r.Fact
	case drover.ConstraintVersion:
		return r.Fact + " " + strings.TrimSpace(r.Constraint)
	}
	return r.Fact + "=" + r.Constraint
}

// fmtBytes prints a size in binary units.
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func exitCode(c *int) string {
	if c == nil {
		return ""
	}
	return fmt.Sprint(*c)
}

// firstLine keeps the subject of a commit message.
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i])
	}
	return s
}

// waited says how long since t, for "waiting 12m": the queue page's
// column of ages. Unlike ago it has no "just now".
func waited(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return roughDuration(d)
}
