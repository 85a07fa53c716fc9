package web

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/drover-ci/drover"
)

// logTail is how much of a log a build page shows inline. Big logs show
// their end (where the error usually is) and link to the whole raw log.
const logTail = 64 << 10

// logView is a log as the build page shows it.
type logView struct {
	drover.Log
	Text string
	// Offset is the byte offset just after Text: the live script asks the
	// log stream to continue from there, so nothing is shown twice.
	Offset int64
	// Omitted counts the bytes before Text that the page does not show.
	Omitted int64
	Live    bool
	Err     string
}

// RawURL is where the API serves the whole log.
func (l logView) RawURL() string { return fmt.Sprintf("/api/v1/logs/%d/raw", l.ID) }

// StreamURL is the API's server-sent event stream of the log.
func (l logView) StreamURL() string { return fmt.Sprintf("/api/v1/logs/%d/stream", l.ID) }

// readLog reads the tail of log l for the build page. A log that cannot be
// read is shown as an error in place: one broken log should not hide the
// rest of the build.
func (s *server) readLog(ctx context.Context, l drover.Log) logView {
	v := logView{Log: l, Live: !l.Complete}
	start := max(l.Bytes-logTail, 0)
	// The index's byte count may lag behind the log store while the log
	// grows, so read to the end and keep only the last logTail bytes.
	tw := &tailWriter{max: logTail}
	if err := s.b.ReadLog(ctx, l.ID, start, tw); err != nil {
		s.logger.Warn("read log", "log", l.ID, "build", l.BuildID, "err", err)
		v.Err = "log unavailable: " + drover.Message(err)
		v.Offset = start + tw.total
		return v
	}
	v.Offset = start + tw.total
	text := tw.bytes()
	v.Omitted = v.Offset - int64(len(text))
	if v.Omitted > 0 {
		// Start at a line boundary when one is near, so the first line
		// shown is whole.
		if i := bytes.IndexByte(text[:min(len(text), 4096)], '\n'); i >= 0 {
			text = text[i+1:]
			v.Omitted += int64(i + 1)
		}
	}
	v.Text = validUTF8(text)
	return v
}

// validUTF8 makes text safe to put in a page. A cut may land inside a
// character; its stray bytes become U+FFFD, as the stream's JSON does.
func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// tailWriter keeps the last max bytes written to it and counts them all.
type tailWriter struct {
	max   int
	total int64
	buf   []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.total += int64(len(p))
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return len(p), nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return len(p), nil
}

func (t *tailWriter) bytes() []byte { return t.buf }

// Shown is how many bytes of the log the page shows.
func (l logView) Shown() int64 { return int64(len(l.Text)) }
