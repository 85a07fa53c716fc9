package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/drover-ci/drover"
)

func (s *server) getLog(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	l, err := s.b.Reader().GetLog(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get log %d: %w", id, err)
	}
	writeJSON(w, http.StatusOK, l)
	return nil
}

// rawLog serves a log's bytes as text from ?offset=, and with ?follow=1
// keeps the response open, flushing live output, until the log completes.
func (s *server) rawLog(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	offset, err := queryInt(r, "offset", 0)
	if err != nil {
		return err
	}
	follow, err := queryBool(r, "follow")
	if err != nil {
		return err
	}
	// A missing log is a clean 404 before any byte is sent.
	if _, err := s.b.Reader().GetLog(r.Context(), id); err != nil {
		return fmt.Errorf("get log %d: %w", id, err)
	}
	tw := &textWriter{w: w, rc: http.NewResponseController(w), flush: follow}
	if !follow {
		err = s.b.ReadLog(r.Context(), id, offset, tw)
	} else {
		// A followed log may stay open for hours; the server's write
		// deadline is for ordinary responses.
		_ = tw.rc.SetWriteDeadline(time.Time{})
		err = s.b.FollowLog(r.Context(), id, offset, func(p []byte) error {
			_, err := tw.Write(p)
			return err
		})
	}
	if err == nil {
		tw.start() // an empty log still answers 200
		return nil
	}
	if !tw.started {
		return fmt.Errorf("read log %d: %w", id, err)
	}
	if r.Context().Err() == nil {
		s.log.Error("log read failed mid-response", "log", id, "err", err)
	}
	// The status is sent; cutting the connection is the only way left to
	// tell the client the body is incomplete.
	panic(http.ErrAbortHandler)
}

// textWriter sends the text/plain header with the first byte, so that an
// error before any byte can still be a JSON error response.
type textWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	flush   bool
	started bool
}

func (t *textWriter) start() {
	if t.started {
		return
	}
	t.started = true
	h := t.w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	t.w.WriteHeader(http.StatusOK)
}

func (t *textWriter) Write(p []byte) (int, error) {
	t.start()
	n, err := t.w.Write(p)
	if err != nil {
		return n, err
	}
	if t.flush {
		if err := t.rc.Flush(); err != nil {
			return n, fmt.Errorf("flush: %w", err)
		}
	}
	return n, nil
}

// streamLog serves a log as server-sent events: `data` events whose data
// is a JSON string of the text and whose id is the byte offset after it,
// then one `end` event when the log is complete. It starts at the offset
// in Last-Event-ID (a reconnecting EventSource) or ?offset=.
func (s *server) streamLog(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	offset, err := queryInt(r, "offset", 0)
	if err != nil {
		return err
	}
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		offset, err = strconv.ParseInt(strings.TrimSpace(last), 10, 64)
		if err != nil || offset < 0 {
			return drover.Errorf(drover.Invalid, "Last-Event-ID %q: want a byte offset", last)
		}
	}
	if _, err := s.b.Reader().GetLog(r.Context(), id); err != nil {
		return fmt.Errorf("get log %d: %w", id, err)
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	type chunk struct{ p []byte }
	chunks := make(chan chunk)
	done := make(chan error, 1)
	// The follower runs beside the loop below so that heartbeats go out
	// while it waits for output; every write stays in this goroutine. It is
	// stopped by cancel and waited for before returning.
	go func() {
		done <- s.b.FollowLog(ctx, id, offset, func(p []byte) error {
			c := chunk{p: append([]byte(nil), p...)} // fn's buffer may be reused
			select {
			case chunks <- c:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	defer func() {
		cancel()
		<-done
	}()

	sse := newSSEWriter(w)
	// Headers go out at once so that the browser's EventSource opens even
	// when the log is quiet; later failures become an `error` event.
	if err := sse.start(); err != nil {
		return nil // the client went away
	}
	var pending []byte // an incomplete UTF-8 sequence held for the next chunk
	heartbeat := time.NewTicker(s.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case c := <-chunks:
			pending = append(pending, c.p...)
			cut := utf8Boundary(pending)
			if cut == 0 {
				continue
			}
			offset += int64(cut)
			if err := sse.event("data", strconv.FormatInt(offset, 10), jsonString(pending[:cut])); err != nil {
				return nil // the client went away
			}
			pending = append(pending[:0], pending[cut:]...)
		case err := <-done:
			done <- err // for the deferred wait
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error("log stream failed", "log", id, "err", err)
					msg, _ := json.Marshal(errorBody{Error: drover.Message(err)})
					_ = sse.event("error", "", string(msg))
				}
				return nil
			}
			if len(pending) > 0 { // the log ended inside a character
				offset += int64(len(pending))
				if err := sse.event("data", strconv.FormatInt(offset, 10), jsonString(pending)); err != nil {
					return nil
				}
			}
			end, _ := json.Marshal(LogEnd{Offset: offset})
			_ = sse.event("end", strconv.FormatInt(offset, 10), string(end))
			return nil
		case <-heartbeat.C:
			if err := sse.comment("heartbeat"); err != nil {
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// utf8Boundary returns the length of the longest prefix of p that does not
// end inside a UTF-8 sequence, so that a character split across two chunks
// of output is sent whole instead of as two replacement characters. Bytes
// that can never complete a character are not held back.
func utf8Boundary(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if !utf8.RuneStart(p[i]) {
			continue
		}
		if !utf8.FullRune(p[i:]) {
			return i
		}
		break
	}
	return len(p)
}

// jsonString encodes p as a JSON string: one line, safe inside an SSE data
// field whatever the log holds. Invalid UTF-8 becomes U+FFFD.
func jsonString(p []byte) string {
	b, _ := json.Marshal(string(p)) // a string always marshals
	return string(b)
}

// queryBool parses a boolean query parameter, false when absent.
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, drover.Errorf(drover.Invalid, "query parameter %s=%q: want 1, 0, true or false", name, v)
	}
	return b, nil
}
