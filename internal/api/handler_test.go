package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/drover-ci/drover"
)

// send makes a raw request, for what the Client never sends.
func (f *fixture) send(t *testing.T, method, path, token, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// errorMessage returns the message of a JSON error body, failing the test
// if the body is not one.
func errorMessage(t *testing.T, body string) string {
	t.Helper()
	var eb errorBody
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error == "" {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	return eb.Error
}

func TestAuth(t *testing.T) {
	const (
		op     = "Bearer " + operatorToken
		reader = "Bearer " + readerToken
		admin  = "Bearer " + adminToken
	)
	tests := []struct {
		name        string
		public      bool
		method      string
		path        string
		auth        string
		body        string
		want        int
		wantMessage string
	}{
		{"write without token", false, "POST", "/api/v1/builders/docs/force", "", "{}", 401, "needs an API token with role operator"},
		{"write without token, public reads", true, "POST", "/api/v1/builders/docs/force", "", "{}", 401, "role operator"},
		{"write with read role", false, "POST", "/api/v1/builders/docs/force", reader, "{}", 403, "role read may not do this"},
		{"change with read role", true, "POST", "/api/v1/changes", reader, `{"branch":"main","revision":"x"}`, 403, "needs role operator"},
		{"write with operator", false, "POST", "/api/v1/builders/docs/force", op, "{}", 201, ""},
		{"write with admin", false, "POST", "/api/v1/builders/docs/force", admin, "{}", 201, ""},
		{"write with wrong token", false, "POST", "/api/v1/builders/docs/force", "Bearer nope", "{}", 401, "token not recognised"},
		{"malformed header", false, "GET", "/api/v1/builders", "Basic dXNlcjpwYXNz", "", 401, "malformed Authorization header"},
		{"empty bearer", false, "GET", "/api/v1/builders", "Bearer ", "", 401, "malformed Authorization header"},
		{"read without token", false, "GET", "/api/v1/builders", "", "", 401, "role read"},
		{"read without token, public reads", true, "GET", "/api/v1/builders", "", "", 200, ""},
		{"read stream without token", false, "GET", "/api/v1/events", "", "", 401, "role read"},
		{"read with reader", false, "GET", "/api/v1/workers", reader, "", 200, ""},
		{"lowercase scheme", false, "GET", "/api/v1/workers", "bearer " + readerToken, "", 200, ""},
		{"bad token on a public read", true, "GET", "/api/v1/workers", "Bearer nope", "", 401, "token not recognised"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Options{PublicReads: tt.public})
			status, h, body := f.send(t, tt.method, tt.path, tt.auth, tt.body)
			if status != tt.want {
				t.Fatalf("status = %d (%s), want %d", status, body, tt.want)
			}
			if tt.wantMessage != "" {
				if msg := errorMessage(t, body); !strings.Contains(msg, tt.wantMessage) {
					t.Errorf("message = %q, want it to contain %q", msg, tt.wantMessage)
				}
			}
			if status == 401 && h.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func TestAuthRefusalLogged(t *testing.T) {
	f := newFixture(t, Options{})
	f.send(t, "GET", "/api/v1/workers", "Bearer stolen-or-stale", "")
	if log := f.log.String(); !strings.Contains(log, "API token refused") || strings.Contains(log, "stolen-or-stale") {
		t.Errorf("log = %q, want the refusal logged without the token", log)
	}
}

func TestClientErrorKinds(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	tests := []struct {
		name       string
		call       func() error
		kind       drover.Kind
		wantPrefix string
	}{
		{"anonymous write", func() error { _, err := f.anon.Force(ctx, "docs", ForceRequest{}); return err }, drover.Unauthorized, "unauthorized: "},
		{"reader write", func() error { _, err := f.reader.Force(ctx, "docs", ForceRequest{}); return err }, drover.Unauthorized, "unauthorized: role read"},
		{"unknown builder", func() error { _, err := f.op.Force(ctx, "nosuch", ForceRequest{}); return err }, drover.NotFound, `not found: no builder "nosuch"`},
		{"unknown build", func() error { _, err := f.reader.Build(ctx, 42); return err }, drover.NotFound, "not found: build 42 not found"},
		{"bad change", func() error { _, err := f.op.SendChange(ctx, &drover.Change{Branch: "main"}); return err }, drover.Invalid, "invalid: change: revision is required"},
		{"bad filter", func() error { _, err := f.reader.Builds(ctx, BuildQuery{State: "sleeping"}); return err }, drover.Invalid, "invalid: query parameter state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if drover.KindOf(err) != tt.kind || !strings.HasPrefix(fmt.Sprint(err), tt.wantPrefix) {
				t.Errorf("err = %v (kind %v), want kind %v starting %q", err, drover.KindOf(err), tt.kind, tt.wantPrefix)
			}
		})
	}
}

func TestNotFoundAndBadPaths(t *testing.T) {
	f := newFixture(t, Options{PublicReads: true})
	op := "Bearer " + operatorToken
	tests := []struct {
		method, path, auth string
		want               int
		wantMessage        string
	}{
		{"GET", "/api/v1/builds/99", "", 404, "build 99 not found"},
		{"GET", "/api/v1/builds/99/steps", "", 404, "build 99 not found"},
		{"GET", "/api/v1/builds/99/artifacts", "", 404, "build 99 not found"},
		{"GET", "/api/v1/artifacts/5", "", 404, "serves no artifacts"},
		{"GET", "/api/v1/builders/nosuch", "", 404, `no builder "nosuch"`},
		{"GET", "/api/v1/builders/nosuch/eligibility", "", 404, `no builder "nosuch"`},
		{"GET", "/api/v1/builders/docs/builds/7", "", 404, "not found"},
		{"GET", "/api/v1/requests/5", "", 404, "build request 5 not found"},
		{"POST", "/api/v1/requests/5/cancel", op, 404, "build request 5 not found"},
		{"POST", "/api/v1/builds/5/cancel", op, 404, "build 5 not found"},
		{"GET", "/api/v1/logs/5", "", 404, "log 5 not found"},
		{"GET", "/api/v1/logs/5/raw", "", 404, "log 5 not found"},
		{"GET", "/api/v1/logs/5/stream", "", 404, "log 5 not found"},
		{"GET", "/api/v1/workers/ghost", "", 404, "ghost not found"},
		{"GET", "/api/v1/nosuch", "", 404, "no API endpoint /api/v1/nosuch"},
		{"GET", "/elsewhere", "", 404, "no API endpoint"},
		{"DELETE", "/api/v1/builds/1", op, 405, "method DELETE not allowed"},
		{"GET", "/api/v1/builds/abc", "", 400, `id "abc": want a positive integer`},
		{"GET", "/api/v1/builds/-3", "", 400, "positive integer"},
		{"GET", "/api/v1/builders/docs/builds/0", "", 400, "build number"},
		{"GET", "/api/v1/builds?limit=x", "", 400, "limit"},
		{"GET", "/api/v1/builds?limit=100000", "", 400, "at most 1000"},
		{"GET", "/api/v1/builds?before=-1", "", 400, "before"},
		{"GET", "/api/v1/requests?state=lost", "", 400, "want pending, claimed, finished or cancelled"},
		{"GET", "/api/v1/changes?limit=-1", "", 400, "limit"},
		{"GET", "/api/v1/logs/1/raw?follow=maybe", "", 400, "follow"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, h, body := f.send(t, tt.method, tt.path, tt.auth, "")
			if status != tt.want {
				t.Fatalf("status = %d (%s), want %d", status, body, tt.want)
			}
			if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q, want JSON", ct)
			}
			if msg := errorMessage(t, body); !strings.Contains(msg, tt.wantMessage) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.wantMessage)
			}
		})
	}
}

func TestBadBodies(t *testing.T) {
	f := newFixture(t, Options{})
	op := "Bearer " + operatorToken
	tests := []struct {
		name, path, body string
		wantMessage      string
	}{
		{"force malformed", "/api/v1/builders/docs/force", `{"branch": "main"`, "malformed JSON"},
		{"force syntax", "/api/v1/builders/docs/force", `{"branch" "main"}`, "malformed JSON at byte"},
		{"force unknown field", "/api/v1/builders/docs/force", `{"branch":"main","brnach":"x"}`, `unknown field "brnach"`},
		{"force wrong type", "/api/v1/builders/docs/force", `{"priority":"high"}`, `field "priority": want a number`},
		{"force property not a string", "/api/v1/builders/docs/force", `{"properties":{"a":1}}`, `field "properties": want a string, got number`},
		{"force empty property name", "/api/v1/builders/docs/force", `{"properties":{"":"x"}}`, "empty property name"},
		{"force not an object", "/api/v1/builders/docs/force", `[1,2]`, "want a JSON object, got array"},
		{"force trailing data", "/api/v1/builders/docs/force", `{} {}`, "found more after it"},
		{"force trailing junk", "/api/v1/builders/docs/force", `{} x`, "malformed JSON"},
		{"change empty body", "/api/v1/changes", ``, "request body is empty"},
		{"change unknown field", "/api/v1/changes", `{"revision":"x","branch":"b","id":3}`, `unknown field "id"`},
		{"change no revision", "/api/v1/changes", `{"branch":"main"}`, "revision is required"},
		{"change nowhere", "/api/v1/changes", `{"revision":"abc"}`, "repository or branch is required"},
		{"change bad time", "/api/v1/changes", `{"revision":"x","branch":"b","when":"yesterday"}`, "bad time"},
		{"change files not a list", "/api/v1/changes", `{"revision":"x","branch":"b","files":"a.c"}`, `field "files": want an array`},
		{"cancel unknown field", "/api/v1/builds/1/cancel", `{"why":"x"}`, `unknown field "why"`},
		{"too large", "/api/v1/changes", `{"revision":"x","branch":"b","comments":"` + strings.Repeat("x", maxBodyBytes) + `"}`, "larger than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := f.send(t, "POST", tt.path, op, tt.body)
			if status != http.StatusBadRequest {
				t.Fatalf("status = %d (%.200s), want 400", status, body)
			}
			if msg := errorMessage(t, body); !strings.Contains(msg, tt.wantMessage) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.wantMessage)
			}
		})
	}
	// Nothing refused was stored.
	if reqs, _ := f.st.ListRequests(context.Background(), storeAll()); len(reqs) != 0 {
		t.Errorf("refused bodies stored requests: %+v", reqs)
	}
}

func TestInternalErrorsHidden(t *testing.T) {
	f := newFixture(t, Options{})
	f.b.failEligibility = errors.New("pq: connection to 10.1.2.3 refused")
	status, _, body := f.send(t, "GET", "/api/v1/builders/docs/eligibility", "Bearer "+readerToken, "")
	if status != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500", status)
	}
	if msg := errorMessage(t, body); msg != "internal error" {
		t.Errorf("message = %q, want the details hidden", msg)
	}
	if !strings.Contains(f.log.String(), "10.1.2.3 refused") {
		t.Errorf("log = %q, want the real error logged", f.log.String())
	}

	f.b.failEligibility = drover.Errorf(drover.Unavailable, "master is shutting down")
	status, _, body = f.send(t, "GET", "/api/v1/builders/docs/eligibility", "Bearer "+readerToken, "")
	if status != http.StatusServiceUnavailable || errorMessage(t, body) != "master is shutting down" {
		t.Errorf("unavailable = %d %s", status, body)
	}
	_, err := f.reader.Eligibility(context.Background(), "docs")
	if drover.KindOf(err) != drover.Unavailable {
		t.Errorf("client error = %v, want unavailable", err)
	}
}
