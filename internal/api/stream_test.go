package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/events"
)

// sseEvent is one server-sent event as a browser's EventSource sees it.
type sseEvent struct {
	id, typ, data string
}

// sseReader parses a text/event-stream, keeping the comments it skips.
type sseReader struct {
	r        *bufio.Reader
	comments []string
}

// next returns the next event, or the comment when comments is set and a
// comment comes first.
func (s *sseReader) next(comments bool) (sseEvent, error) {
	var e sseEvent
	var data []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return e, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if e.typ != "" || len(data) > 0 {
				e.data = strings.Join(data, "\n")
				return e, nil
			}
		case strings.HasPrefix(line, ":"):
			s.comments = append(s.comments, strings.TrimSpace(line[1:]))
			if comments {
				return sseEvent{typ: "comment", data: strings.TrimSpace(line[1:])}, nil
			}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				e.id = value
			case "event":
				e.typ = value
			case "data":
				data = append(data, value)
			default:
				return e, errors.New("unknown SSE field in " + strconv.Quote(line))
			}
		}
	}
}

// stream opens a streaming GET as a reader would.
func (f *fixture) stream(t *testing.T, ctx context.Context, path string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+readerToken)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func openSSE(t *testing.T, resp *http.Response) *sseReader {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type = %q", ct)
	}
	return &sseReader{r: bufio.NewReader(resp.Body)}
}

// waitFor polls cond, for state that another goroutine settles.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLogFollow(t *testing.T) {
	f := newFixture(t, Options{})
	_, l := f.startBuild(t, "docs", "w")
	f.appendLog(t, l.ID, "first\n", false)

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := f.reader.Log(context.Background(), l.ID, 2, true, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	br := bufio.NewReader(pr)
	line, err := br.ReadString('\n')
	if err != nil || line != "rst\n" {
		t.Fatalf("first line = %q, %v; want the stored bytes from offset 2", line, err)
	}
	// Bytes appended after the request started arrive while it is open.
	f.appendLog(t, l.ID, "second\n", false)
	if line, err = br.ReadString('\n'); err != nil || line != "second\n" {
		t.Fatalf("second line = %q, %v", line, err)
	}
	f.appendLog(t, l.ID, "last", true)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "last" {
		t.Fatalf("rest = %q, %v", rest, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Log(follow) = %v, want nil once the log is complete", err)
	}
	waitFor(t, "the follower to stop", func() bool { return f.b.logs.active.Load() == 0 })
}

func TestLogFollowClientGoesAway(t *testing.T) {
	f := newFixture(t, Options{})
	_, l := f.startBuild(t, "docs", "w")
	f.appendLog(t, l.ID, "running...\n", false)

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := f.reader.Log(ctx, l.ID, 0, true, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	if line, err := bufio.NewReader(pr).ReadString('\n'); err != nil || line != "running...\n" {
		t.Fatalf("line = %q, %v", line, err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Log after cancel = %v, want context.Canceled", err)
	}
	// The server notices and stops following the log.
	waitFor(t, "the follower to stop", func() bool { return f.b.logs.active.Load() == 0 })
}

func TestLogStream(t *testing.T) {
	f := newFixture(t, Options{})
	_, l := f.startBuild(t, "docs", "w")
	// "é" is two bytes, split across two appends: the stream must not send
	// half a character.
	f.appendLog(t, l.ID, "h\xc3", false)

	sse := openSSE(t, f.stream(t, context.Background(), "/api/v1/logs/"+strconv.FormatInt(l.ID, 10)+"/stream", nil))
	e, err := sse.next(false)
	if err != nil {
		t.Fatal(err)
	}
	if (e != sseEvent{id: "1", typ: "data", data: `"h"`}) {
		t.Errorf("first event = %+v, want h with id 1 and the half character held back", e)
	}
	f.appendLog(t, l.ID, "\xa9llo\n\"quoted\"\r\nnext", false)
	f.appendLog(t, l.ID, "", true)
	e, err = sse.next(false)
	if err != nil {
		t.Fatal(err)
	}
	var text string
	if err := json.Unmarshal([]byte(e.data), &text); err != nil {
		t.Fatalf("data %q is not a JSON string: %v", e.data, err)
	}
	if e.typ != "data" || text != "éllo\n\"quoted\"\r\nnext" || e.id != "21" {
		t.Errorf("second event = %+v (text %q), want the rest with id 21", e, text)
	}
	e, err = sse.next(false)
	if err != nil {
		t.Fatal(err)
	}
	if e.typ != "end" || e.id != "21" || e.data != `{"offset":21}` {
		t.Errorf("last event = %+v, want end at 21", e)
	}
	if _, err := sse.next(false); err != io.EOF {
		t.Errorf("after end: %v, want the stream closed", err)
	}
}

func TestLogStreamResume(t *testing.T) {
	f := newFixture(t, Options{})
	_, l := f.startBuild(t, "docs", "w")
	f.appendLog(t, l.ID, "0123456789", true)
	path := "/api/v1/logs/" + strconv.FormatInt(l.ID, 10) + "/stream"

	tests := []struct {
		name, query, lastID string
		want                string
		wantID              string
	}{
		{"from the start", "", "", "0123456789", "10"},
		{"offset", "?offset=4", "", "456789", "10"},
		{"last event id", "", "7", "789", "10"},
		{"last event id wins over offset", "?offset=2", "8", "89", "10"},
		{"at the end", "?offset=10", "", "", "10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.lastID != "" {
				h.Set("Last-Event-ID", tt.lastID)
			}
			sse := openSSE(t, f.stream(t, context.Background(), path+tt.query, h))
			var got strings.Builder
			for {
				e, err := sse.next(false)
				if err != nil {
					t.Fatalf("stream ended without end event: %v", err)
				}
				if e.typ == "end" {
					if e.id != tt.wantID {
						t.Errorf("end id = %q, want %q", e.id, tt.wantID)
					}
					break
				}
				var s string
				if err := json.Unmarshal([]byte(e.data), &s); err != nil {
					t.Fatal(err)
				}
				got.WriteString(s)
			}
			if got.String() != tt.want {
				t.Errorf("text = %q, want %q", got.String(), tt.want)
			}
		})
	}

	status, _, body := f.send(t, "GET", path, "Bearer "+readerToken, "")
	if status != http.StatusOK {
		t.Errorf("plain GET = %d %s", status, body)
	}
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+readerToken)
	req.Header.Set("Last-Event-ID", "ten")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errorMessage(t, string(b)), "Last-Event-ID") {
		t.Errorf("bad Last-Event-ID = %d %s", resp.StatusCode, b)
	}
}

func TestLogStreamErrorEvent(t *testing.T) {
	f := newFixture(t, Options{})
	_, l := f.startBuild(t, "docs", "w")
	f.appendLog(t, l.ID, "abc", true)
	sse := openSSE(t, f.stream(t, context.Background(), "/api/v1/logs/"+strconv.FormatInt(l.ID, 10)+"/stream?offset=99", nil))
	e, err := sse.next(false)
	if err != nil {
		t.Fatal(err)
	}
	if e.typ != "error" || !strings.Contains(e.data, "past the end") {
		t.Errorf("event = %+v, want an error event with the reason", e)
	}
}

func TestHeartbeats(t *testing.T) {
	f := newFixture(t, Options{Heartbeat: 20 * time.Millisecond})
	_, l := f.startBuild(t, "docs", "w")
	for _, path := range []string{"/api/v1/events", "/api/v1/logs/" + strconv.FormatInt(l.ID, 10) + "/stream"} {
		t.Run(path, func(t *testing.T) {
			sse := openSSE(t, f.stream(t, context.Background(), path, nil))
			e, err := sse.next(true)
			if err != nil {
				t.Fatal(err)
			}
			if e.typ != "comment" || e.data != "heartbeat" {
				t.Errorf("first thing on an idle stream = %+v, want a heartbeat comment", e)
			}
		})
	}
}

func TestEventStream(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	sse := openSSE(t, f.stream(t, ctx, "/api/v1/events", nil))
	// The subscription exists once the headers are out.
	req, err := f.op.Force(ctx, "docs", ForceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	f.b.bus.Publish(events.Event{Type: events.BuildFinished, BuildID: 7, Builder: "docs", Result: string(drover.Success)})

	want := []events.Event{
		{Type: events.RequestAdded, Builder: "docs", Request: req.ID},
		{Type: events.BuildFinished, BuildID: 7, Builder: "docs", Result: "success"},
	}
	for _, w := range want {
		e, err := sse.next(false)
		if err != nil {
			t.Fatal(err)
		}
		var got events.Event
		if err := json.Unmarshal([]byte(e.data), &got); err != nil {
			t.Fatalf("data %q: %v", e.data, err)
		}
		if e.typ != string(w.Type) || got != w {
			t.Errorf("event %s %+v, want %+v", e.typ, got, w)
		}
	}
	// A master shutting down closes the subscription and so the stream.
	f.b.bus.Close()
	if _, err := sse.next(false); err != io.EOF {
		t.Errorf("after bus close: %v, want EOF", err)
	}
}
