package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"time"

	"github.com/drover-ci/drover"
)

// A running command uploads artifacts through the control socket:
//
//	POST /upload {command_id, path, dest} → {ok: true}, once the master holds every file
//
// path is absolute or relative to the command's working directory, and
// must stay inside the builder's directory; dest is the artifact path
// ("" for path's base name). See UploadArtifact.

// UploadRequest is the body of POST /upload.
type UploadRequest struct {
	CommandID string `json:"command_id"`
	Path      string `json:"path"`
	Dest      string `json:"dest,omitempty"`
}

func (a *Agent) handleUpload(w http.ResponseWriter, r *http.Request) {
	var req UploadRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody))
	if err := dec.Decode(&req); err != nil {
		writeError(w, drover.Errorf(drover.Invalid, "decode request: %w", err))
		return
	}
	if req.CommandID == "" || req.Path == "" {
		writeError(w, drover.Errorf(drover.Invalid, "upload needs a command id and a path"))
		return
	}
	// An upload takes as long as the files need, not the control
	// socket's usual few seconds; the caller's context bounds it.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	a.log.Info("upload from a running command", "command", req.CommandID, "path", req.Path, "dest", req.Dest)
	if err := a.UploadArtifact(r.Context(), req.CommandID, req.Path, req.Dest); err != nil {
		a.log.Warn("upload from a running command failed", "command", req.CommandID, "path", req.Path, "err", err)
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// UploadFromCommand asks the worker listening on socket (a command's
// $DROVER_CONTROL) to upload req.Path as an artifact of the command's
// build, and waits until it is done or ctx ends. Errors carry the
// worker's kind: Invalid for a bad path, NotFound for an unknown command,
// Unavailable when no worker answers.
func UploadFromCommand(ctx context.Context, socket string, req UploadRequest) error {
	// No timeout: ctx bounds the upload.
	return postControl(ctx, socket, "/upload", 0, req, "upload request")
}

// socketClient is an HTTP client whose every request goes to the unix
// socket at path (request URLs name the placeholder host "worker").
// timeout 0 leaves requests bounded by their context only. Callers close
// the transport's idle connections when done.
func socketClient(path string, timeout time.Duration) (*http.Client, *http.Transport) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &http.Client{Transport: tr, Timeout: timeout}, tr
}

// postControl posts req as JSON to the worker's control socket at path
// and turns its answer into an error of the worker's kind (see
// controlAnswer); what names the request in errors.
func postControl(ctx context.Context, socket, path string, timeout time.Duration, req any, what string) error {
	client, tr := socketClient(socket, timeout)
	defer tr.CloseIdleConnections()
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s: %w", what, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://worker"+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return drover.Errorf(drover.Unauthorized, "control socket %s: permission denied", socket)
		}
		return drover.Errorf(drover.Unavailable, "no worker answers on %s: %v", socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxControlBody))
	if err != nil {
		return drover.Errorf(drover.Unavailable, "read the worker's answer: %w", err)
	}
	return controlAnswer(resp, body)
}

// controlAnswer turns a control socket's non-200 answer into an error of
// the matching kind.
func controlAnswer(resp *http.Response, body []byte) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e controlError
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = resp.Status
	}
	kind := drover.Internal
	switch resp.StatusCode {
	case http.StatusBadRequest:
		kind = drover.Invalid
	case http.StatusNotFound:
		kind = drover.NotFound
	case http.StatusConflict:
		kind = drover.Conflict
	case http.StatusServiceUnavailable:
		kind = drover.Unavailable
	}
	return drover.Errorf(kind, "worker: %s", e.Error)
}
