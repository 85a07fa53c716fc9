package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/drover-ci/drover"
)

// The control endpoint lets the worker's owner talk to the running worker
// process: a unix socket, DIR/control.sock, readable and writable by the
// worker's user only (that is the whole of its access control), serving
// a tiny HTTP API:
//
//	GET  /availability                      → AvailabilityStatus
//	POST /availability {availability, reason} → AvailabilityStatus
//	POST /step {command_id, kind, name, value} → {ok}  (stepupdate.go)
//	POST /upload {command_id, path, dest} → {ok}        (stepupload.go)
//
// "auto" as the availability clears the manual setting. Errors answer
// {"error": "..."} with 400 (invalid), 404, 405 or 500.

const (
	controlSocketName = "control.sock"
	// maxSocketPath is the longest unix socket path every supported
	// system takes (macOS and the BSDs: 104 bytes with the terminating
	// NUL; Linux: 108).
	maxSocketPath = 103
	// controlTimeout bounds one exchange with the control socket; the
	// worker answers from memory, so only a wedged worker takes longer.
	controlTimeout = 5 * time.Second
	// controlShutdown is how long Run waits for control requests in
	// flight when it returns.
	controlShutdown = 2 * time.Second
	maxControlBody  = 64 << 10
)

// controlPath is the control socket of the worker directory dir.
func controlPath(dir string) string { return filepath.Join(dir, controlSocketName) }

// controlServer serves the control socket; Run owns it.
type controlServer struct {
	path string
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
	once sync.Once
}

// listenControl creates DIR/control.sock, replacing a stale one that a
// crashed worker left behind, and serves it. A socket that answers
// belongs to a worker still running in DIR: that is a Conflict, as two
// workers sharing a directory would trample each other's builds.
func (a *Agent) listenControl() (*controlServer, error) {
	path := controlPath(a.dir)
	if len(path) > maxSocketPath {
		return nil, drover.Errorf(drover.Invalid, "control socket path %s is %d bytes, over the limit of %d of unix sockets: use a shorter worker directory", path, len(path), maxSocketPath)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.IsDir() {
			return nil, drover.Errorf(drover.Conflict, "%s is a directory; remove it so the worker can make its control socket there", path)
		}
		if err := checkNoWorker(a.dir); err != nil {
			return nil, err
		}
		a.log.Info("removing a stale control socket", "path", path)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	// The socket is the access control: only the worker's user may change
	// its availability. (Windows has no modes; there the directory's ACL
	// guards it.)
	if err := os.Chmod(path, 0o600); err != nil && runtime.GOOS != "windows" {
		ln.Close()
		return nil, fmt.Errorf("restrict control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /availability", a.handleGetAvailability)
	mux.HandleFunc("POST /availability", a.handleSetAvailability)
	mux.HandleFunc("POST /step", a.handleStep)
	mux.HandleFunc("POST /upload", a.handleUpload)
	c := &controlServer{
		path: path,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: controlTimeout,
			ReadTimeout:       controlTimeout,
			WriteTimeout:      controlTimeout,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(c.done)
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("control socket stopped serving", "path", path, "err", err)
		}
	}()
	a.log.Debug("control socket listening", "path", path)
	return c, nil
}

// checkNoWorker fails with a Conflict when a worker process answers on
// dir's control socket.
func checkNoWorker(dir string) error {
	c, err := net.DialTimeout("unix", controlPath(dir), time.Second)
	if err != nil {
		return nil
	}
	c.Close()
	return drover.Errorf(drover.Conflict, "another worker is running in %s (its control socket answers); stop it first, or use another directory", dir)
}

// Close stops serving, waits for the server, and removes the socket. It
// is idempotent.
func (c *controlServer) Close() error {
	var err error
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), controlShutdown)
		defer cancel()
		if serr := c.srv.Shutdown(ctx); serr != nil {
			c.srv.Close()
		}
		<-c.done
		if rerr := os.Remove(c.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("remove control socket: %w", rerr)
		}
	})
	return err
}

func (a *Agent) handleGetAvailability(w http.ResponseWriter, r *http.Request) {
	st, _ := a.availability()
	writeJSON(w, http.StatusOK, st)
}

// availabilityRequest is the body of POST /availability.
type availabilityRequest struct {
	Availability string `json:"availability"`
	Reason       string `json:"reason,omitempty"`
}

func (a *Agent) handleSetAvailability(w http.ResponseWriter, r *http.Request) {
	var req availabilityRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody))
	if err := dec.Decode(&req); err != nil {
		writeError(w, drover.Errorf(drover.Invalid, "decode request: %w", err))
		return
	}
	m, err := parseManual(req.Availability, req.Reason, a.now())
	if err != nil {
		writeError(w, err)
		return
	}
	st, err := a.setManual(m)
	if err != nil {
		a.log.Error("manual availability not applied", "err", err)
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// controlError is the body of an error answer.
type controlError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch drover.KindOf(err) {
	case drover.Invalid:
		code = http.StatusBadRequest
	case drover.NotFound:
		code = http.StatusNotFound
	case drover.Conflict:
		code = http.StatusConflict
	}
	writeJSON(w, code, controlError{Error: err.Error()})
}

// errNotRunning means no worker process answers on the control socket.
var errNotRunning = errors.New("no worker running")

// controlDo makes one request to the control socket of dir and decodes a
// status. It returns errNotRunning when there is no socket or nobody
// listens on it (a crashed worker's stale socket).
func controlDo(ctx context.Context, dir, method string, body any) (AvailabilityStatus, error) {
	var st AvailabilityStatus
	path := controlPath(dir)
	client, tr := socketClient(path, controlTimeout)
	defer tr.CloseIdleConnections()

	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return st, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	// The host is a placeholder: the transport dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://worker/availability", rd)
	if err != nil {
		return st, fmt.Errorf("control request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			if errors.Is(err, fs.ErrPermission) {
				return st, drover.Errorf(drover.Unauthorized, "control socket %s: permission denied: run this as the worker's user", path)
			}
			return st, errNotRunning
		}
		return st, drover.Errorf(drover.Unavailable, "worker in %s does not answer on %s: %w", dir, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxControlBody))
	if err != nil {
		return st, drover.Errorf(drover.Unavailable, "read the worker's answer: %w", err)
	}
	if err := controlAnswer(resp, b); err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("decode the worker's answer: %w", err)
	}
	return st, nil
}

// QueryAvailability asks the worker running in dir for its availability.
// With no worker running there (running false), it answers what the
// worker would start with: dir's settings evaluated now.
func QueryAvailability(ctx context.Context, dir string) (st AvailabilityStatus, running bool, err error) {
	st, err = controlDo(ctx, dir, http.MethodGet, nil)
	if err == nil {
		return st, true, nil
	}
	if !errors.Is(err, errNotRunning) {
		return st, false, err
	}
	st, err = evaluateStored(dir)
	return st, false, err
}

// SetAvailability sets the owner's manual availability of the worker in
// dir to state (eager, reluctant, draining or offline), or clears it with
// "auto"; reason is shown on the master. A running worker applies it at
// once and tells its master; with none running (running false) it is
// written to dir and applies when the worker starts. Either way it
// persists until changed, so a crontab line is enough to lend a machine
// by the hour.
func SetAvailability(ctx context.Context, dir, state, reason string) (st AvailabilityStatus, running bool, err error) {
	if _, err := parseManual(state, reason, time.Now()); err != nil {
		return st, false, err
	}
	body := availabilityRequest{Availability: state, Reason: reason}
	st, err = controlDo(ctx, dir, http.MethodPost, body)
	if err == nil {
		return st, true, nil
	}
	if !errors.Is(err, errNotRunning) {
		return st, false, err
	}
	if _, err := loadSettings(dir); err != nil {
		return st, false, err
	}
	m, err := parseManual(state, reason, time.Now())
	if err != nil {
		return st, false, err
	}
	if err := saveManual(dir, m); err != nil {
		return st, false, err
	}
	// A worker may have started since the first try, and read the file
	// before this write: ask its socket again. (Run listens before it
	// reads the file, so one of the two sees the setting.)
	st, err = controlDo(ctx, dir, http.MethodPost, body)
	if err == nil {
		return st, true, nil
	}
	if !errors.Is(err, errNotRunning) {
		return st, false, err
	}
	st, err = evaluateStored(dir)
	return st, false, err
}

// evaluateStored evaluates dir's settings now, with this machine's load:
// what a worker starting in dir would report.
func evaluateStored(dir string) (AvailabilityStatus, error) {
	s, err := loadSettings(dir)
	if err != nil {
		return AvailabilityStatus{}, err
	}
	load, loadErr := 0.0, error(nil)
	if s.sched.MaxLoad > 0 {
		load, loadErr = systemLoadAverage()
	}
	av, reason, src := evaluate(s, time.Now(), load, loadErr)
	return statusOf(s, av, reason, src, load, loadErr), nil
}
