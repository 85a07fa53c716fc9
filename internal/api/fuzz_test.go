package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fuzzBody posts body to path on h and checks that the answer is a clean
// success or a 4xx with a JSON error, never a 500 or a panic.
func fuzzBody(t *testing.T, h http.Handler, path, body string) {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+operatorToken)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	switch {
	case rec.Code == http.StatusCreated:
	case rec.Code >= 400 && rec.Code < 500:
		errorMessage(t, rec.Body.String())
	default:
		t.Fatalf("POST %s %q: status %d: %s", path, body, rec.Code, rec.Body)
	}
}

func seedBodies(f *testing.F, seeds ...string) {
	for _, s := range append(seeds, ``, `{}`, `null`, `[]`, `"x"`, `{"a":1}`, `{} {}`, `{"properties":{"":"x"}}`, "{\"x\":\"\xff\"}") {
		f.Add(s)
	}
}

func FuzzForceBody(f *testing.F) {
	seedBodies(f,
		`{"branch":"main","revision":"abc","repository":"https://example.org/r.git","properties":{"k":"v"},"priority":3,"reason":"why"}`,
		`{"priority":1e400}`, `{"priority":-9223372036854775809}`, `{"properties":null}`, `{"reason":"\u0000"}`)
	h := NewHandler(newTestBackend(f), nil, Options{})
	f.Fuzz(func(t *testing.T, body string) {
		fuzzBody(t, h, "/api/v1/builders/docs/force", body)
	})
}

func FuzzChangeBody(f *testing.F) {
	seedBodies(f,
		`{"repository":"r","branch":"main","revision":"abc","author":"a","comments":"c","files":["a","b"],"category":"push","properties":{"k":"v"},"when":"2024-01-02T03:04:05Z"}`,
		`{"revision":"x","branch":"b","when":"0000-01-01T00:00:00Z"}`, `{"revision":"x","branch":"b","when":"9999-12-31T23:59:59+14:00"}`,
		`{"revision":"x","branch":"b","files":[null]}`)
	h := NewHandler(newTestBackend(f), nil, Options{})
	f.Fuzz(func(t *testing.T, body string) {
		fuzzBody(t, h, "/api/v1/changes", body)
	})
}
