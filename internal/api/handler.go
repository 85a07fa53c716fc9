package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/tokens"
)

// Options tune the handler.
type Options struct {
	// PublicReads lets anonymous callers use the read endpoints; writes
	// always need an operator token.
	PublicReads bool
	// Version is the master's program version, shown by /api/v1/version.
	Version string
	// Heartbeat is how often an idle event stream gets a comment line, so
	// that proxies and load balancers keep it open. Zero means 15 seconds.
	Heartbeat time.Duration
}

const (
	// maxBodyBytes bounds request bodies: the largest honest body (a change
	// with many files) is a few kilobytes.
	maxBodyBytes = 1 << 20
	// defaultHeartbeat keeps idle streams under the 30-60 s idle timeouts
	// common in reverse proxies.
	defaultHeartbeat = 15 * time.Second
	// recentBuilds is how many builds the builder and worker pages list.
	recentBuilds = 20
	// maxLimit caps ?limit= so one call cannot make the master load its
	// whole history.
	maxLimit = 1000
)

// server holds what the handlers share.
type server struct {
	b         Backend
	log       *slog.Logger
	opts      Options
	heartbeat time.Duration
}

// NewHandler returns the handler of every path under /api/v1/. The master
// mounts it at "/api/v1/"; other paths get a JSON 404.
func NewHandler(b Backend, logger *slog.Logger, opts Options) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &server{b: b, log: logger.With("component", "api"), opts: opts, heartbeat: opts.Heartbeat}
	if s.heartbeat <= 0 {
		s.heartbeat = defaultHeartbeat
	}

	mux := http.NewServeMux()
	read := func(pattern string, h handlerFunc) { mux.Handle(pattern, s.endpoint(drover.RoleRead, h)) }
	write := func(pattern string, h handlerFunc) { mux.Handle(pattern, s.endpoint(drover.RoleOperator, h)) }
	admin := func(pattern string, h handlerFunc) { mux.Handle(pattern, s.endpoint(drover.RoleAdmin, h)) }

	read("GET /api/v1/version", s.version)

	read("GET /api/v1/builders", s.listBuilders)
	read("GET /api/v1/builders/{name}", s.getBuilder)
	read("GET /api/v1/builders/{name}/eligibility", s.eligibility)
	write("POST /api/v1/builders/{name}/force", s.force)
	read("GET /api/v1/builders/{name}/builds/{number}", s.getBuildByNumber)

	read("GET /api/v1/builds", s.listBuilds)
	read("GET /api/v1/builds/{id}", s.getBuild)
	read("GET /api/v1/builds/{id}/steps", s.listSteps)
	read("GET /api/v1/builds/{id}/artifacts", s.listArtifacts)
	read("GET /api/v1/artifacts/{id}", s.getArtifact)
	write("POST /api/v1/builds/{id}/cancel", s.cancelBuild)

	read("GET /api/v1/requests", s.listRequests)
	read("GET /api/v1/requests/{id}", s.getRequest)
	write("POST /api/v1/requests/{id}/cancel", s.cancelRequest)

	read("GET /api/v1/logs/{id}", s.getLog)
	read("GET /api/v1/logs/{id}/raw", s.rawLog)
	read("GET /api/v1/logs/{id}/stream", s.streamLog)

	read("GET /api/v1/workers", s.listWorkers)
	read("GET /api/v1/workers/{name}", s.getWorker)
	write("POST /api/v1/workers/{name}/availability", s.setAvailability)
	admin("POST /api/v1/workers/{name}/approve", s.approveWorker)
	admin("POST /api/v1/workers/{name}/reject", s.rejectWorker)

	read("GET /api/v1/queue", s.queue)
	read("GET /api/v1/locks", s.locks)

	read("GET /api/v1/changes", s.listChanges)
	write("POST /api/v1/changes", s.addChange)

	read("GET /api/v1/config", s.getConfig)
	read("GET /api/v1/masters", s.site)
	admin("POST /api/v1/config/reload", s.reloadConfig)

	read("GET /api/v1/events", s.streamEvents)

	return &router{mux: mux, s: s}
}

// router answers the requests the mux has no handler for (unknown paths,
// wrong methods) in JSON, like every other error, and turns a panicking
// handler into a logged 500 rather than a dropped connection.
type router struct {
	mux *http.ServeMux
	s   *server
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler { //nolint:errorlint // a sentinel value, as net/http compares it
				panic(v)
			}
			rt.s.log.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v)
			// If the handler already wrote, this adds to a broken response;
			// net/http logs the superfluous WriteHeader and no more harm is done.
			writeError(w, http.StatusInternalServerError, "internal error")
		}
	}()
	h, pattern := rt.mux.Handler(r)
	if pattern != "" {
		rt.mux.ServeHTTP(w, r)
		return
	}
	// The mux's own answer is 404 or 405 (with an Allow header) in plain
	// text; keep its status and headers, say it in JSON.
	rec := &statusRecorder{header: make(http.Header)}
	h.ServeHTTP(rec, r)
	if allow := rec.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	switch rec.status {
	case http.StatusMethodNotAllowed:
		writeError(w, rec.status, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
	case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		// The mux cleans paths ("//", "/./") by redirecting; let it.
		rt.mux.ServeHTTP(w, r)
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s", r.URL.Path))
	}
}

// statusRecorder captures what the mux's fallback handler would answer.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

// handlerFunc is an endpoint: it answers, or returns an error for the
// caller, which endpoint turns into a status and a JSON message.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// roleKey is the context key of the caller's role.
type roleKey struct{}

// tokenIDKey is the context key of the public id of the caller's token,
// which writes record as who did them; never the secret.
type tokenIDKey struct{}

// anonymous is the role name used in messages for callers without a token.
const anonymous = drover.Role("anonymous")

// callerRole returns the role the request was authenticated with.
func callerRole(ctx context.Context) drover.Role {
	if r, ok := ctx.Value(roleKey{}).(drover.Role); ok {
		return r
	}
	return anonymous
}

// callerTokenID returns the public id of the token the request was
// authenticated with, or "" for an anonymous caller or a token that is
// not of the drover_<kind>_<id>_<secret> form.
func callerTokenID(ctx context.Context) string {
	id, _ := ctx.Value(tokenIDKey{}).(string)
	return id
}

// endpoint wraps h with authentication for role need and error mapping.
func (s *server) endpoint(need drover.Role, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		role, tokenID, err := s.authenticate(r, need)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		ctx := context.WithValue(r.Context(), roleKey{}, role)
		ctx = context.WithValue(ctx, tokenIDKey{}, tokenID)
		r = r.WithContext(ctx)
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	})
}

// forbidden is an Unauthorized error from a caller whose credentials are
// good but whose role is too low: 403 rather than 401.
type forbidden struct{ err error }

func (f forbidden) Error() string { return f.err.Error() }
func (f forbidden) Unwrap() error { return f.err }

// authenticate checks the request's bearer token for role need and
// returns the caller's role and the token's public id.
func (s *server) authenticate(r *http.Request, need drover.Role) (drover.Role, string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if need == drover.RoleRead && s.opts.PublicReads {
			return anonymous, "", nil
		}
		return "", "", drover.Errorf(drover.Unauthorized, "this needs an API token with role %s (Authorization: Bearer <token>)", need)
	}
	scheme, token, ok := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", "", drover.Errorf(drover.Unauthorized, "malformed Authorization header: want \"Bearer <token>\"")
	}
	role, err := s.b.Authenticate(r.Context(), token)
	if err != nil {
		if drover.KindOf(err) == drover.Unauthorized {
			s.log.Warn("API token refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "err", err)
		}
		return "", "", fmt.Errorf("authenticate: %w", err)
	}
	if !role.Allows(need) {
		return "", "", forbidden{drover.Errorf(drover.Unauthorized, "role %s may not do this: it needs role %s", role, need)}
	}
	// The backend accepted the token, so it is well formed in every real
	// master; a backend that accepts other strings just leaves no id.
	_, id, _, err := tokens.Parse(token)
	if err != nil {
		id = ""
	}
	return role, id, nil
}

// fail answers with err's status and message, logging what the caller does
// not see.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The caller went away; nobody reads the answer.
		return
	}
	status := StatusOf(err)
	if status == http.StatusInternalServerError {
		s.log.Error("API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Debug("API request refused", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="drover"`)
	}
	writeError(w, status, drover.Message(err))
}

// StatusOf maps an error's kind to an HTTP status. It is the one place
// that does, for the API and the web UI alike.
func StatusOf(err error) int {
	var fb forbidden
	if errors.As(err, &fb) {
		return http.StatusForbidden
	}
	switch drover.KindOf(err) {
	case drover.Invalid:
		return http.StatusBadRequest
	case drover.Unauthorized:
		return http.StatusUnauthorized
	case drover.NotFound:
		return http.StatusNotFound
	case drover.Conflict:
		return http.StatusConflict
	case drover.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

// writeJSON encodes v before writing anything, so that an encoding failure
// is still a clean 500.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"internal error"}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // a write error means the caller left
}

// decodeBody decodes the JSON body of r into v, refusing unknown fields,
// trailing data and bodies over maxBodyBytes. An empty body is allowed
// only when optional is set, and leaves v as it was.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) && optional {
			return nil
		}
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return bodyError(err)
		}
		return drover.Errorf(drover.Invalid, "request body: want one JSON object, found more after it")
	}
	return nil
}

// bodyError says what is wrong with a request body in words a script
// author can act on.
func bodyError(err error) error {
	var (
		syntax  *json.SyntaxError
		typ     *json.UnmarshalTypeError
		tooBig  *http.MaxBytesError
		timeErr *time.ParseError
	)
	switch {
	case errors.Is(err, io.EOF):
		return drover.Errorf(drover.Invalid, "request body is empty: want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return drover.Errorf(drover.Invalid, "request body: malformed JSON: unexpected end")
	case errors.As(err, &tooBig):
		return drover.Errorf(drover.Invalid, "request body is larger than %d bytes", tooBig.Limit)
	case errors.As(err, &syntax):
		return drover.Errorf(drover.Invalid, "request body: malformed JSON at byte %d: %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return drover.Errorf(drover.Invalid, "request body: want a JSON object, got %s", typ.Value)
		}
		return drover.Errorf(drover.Invalid, "request body: field %q: want %s, got %s", typ.Field, jsonTypeName(typ.Type.Kind().String()), typ.Value)
	case errors.As(err, &timeErr):
		return drover.Errorf(drover.Invalid, "request body: bad time %q: want RFC 3339, like 2006-01-02T15:04:05Z", timeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return drover.Errorf(drover.Invalid, "request body: unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return drover.Errorf(drover.Invalid, "request body: %v", err)
}

// jsonTypeName names a Go kind the way a JSON author thinks of it.
func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "an array"
	case "bool":
		return "true or false"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "a number"
	}
	return kind
}

// pathID parses the positive integer path value name.
func pathID(r *http.Request, name string) (int64, error) {
	v := r.PathValue(name)
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return 0, drover.Errorf(drover.Invalid, "%s %q: want a positive integer", name, v)
	}
	return id, nil
}

// queryInt parses the non-negative integer query parameter name, 0 when
// absent; max, when positive, caps it.
func queryInt(r *http.Request, name string, max int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, drover.Errorf(drover.Invalid, "query parameter %s=%q: want a non-negative integer", name, v)
	}
	if max > 0 && n > max {
		return 0, drover.Errorf(drover.Invalid, "query parameter %s=%d: at most %d", name, n, max)
	}
	return n, nil
}

// nonNil makes empty lists encode as [] rather than null, which scripts
// iterate without a special case.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
