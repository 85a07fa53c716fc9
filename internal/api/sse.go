package api

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// sseWriter writes server-sent events and flushes each one. It is used by
// one goroutine at a time.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

// start sends the headers; streams outlive the server's write deadline.
func (s *sseWriter) start() error {
	if s.started {
		return nil
	}
	s.started = true
	_ = s.rc.SetWriteDeadline(time.Time{}) // not every writer supports deadlines
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx would otherwise hold events back
	s.w.WriteHeader(http.StatusOK)
	return s.flush()
}

// event writes one event; data must hold no newline (callers send JSON).
func (s *sseWriter) event(typ, id, data string) error {
	if strings.ContainsAny(data, "\r\n") {
		return fmt.Errorf("sse: event data holds a newline")
	}
	if err := s.start(); err != nil {
		return err
	}
	var b strings.Builder
	if id != "" {
		fmt.Fprintf(&b, "id: %s\n", id)
	}
	fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", typ, data)
	if _, err := io.WriteString(s.w, b.String()); err != nil {
		return err
	}
	return s.flush()
}

// comment writes a comment line, which clients ignore; it keeps idle
// connections open through proxies.
func (s *sseWriter) comment(text string) error {
	if err := s.start(); err != nil {
		return err
	}
	if _, err := io.WriteString(s.w, ": "+text+"\n\n"); err != nil {
		return err
	}
	return s.flush()
}

func (s *sseWriter) flush() error {
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("sse flush: %w", err)
	}
	return nil
}
