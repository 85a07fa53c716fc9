package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/drover-ci/drover"
)

const (
	// defaultTimeout bounds one non-streaming call: long enough for a busy
	// master, short enough that a script does not hang on a dead one.
	defaultTimeout = 30 * time.Second
	// waitPollInterval is how often WaitRequest looks at its request:
	// builds take seconds at least, and a poll is one cheap read.
	waitPollInterval = 500 * time.Millisecond
	// maxErrorBody bounds how much of an error response is read.
	maxErrorBody = 64 << 10
)

// Client calls a master's REST API. Its methods are safe for concurrent
// use; errors carry drover kinds (drover.KindOf) mapped back from the HTTP
// status, and read "<kind>: <the server's message>".
type Client struct {
	// BaseURL is the master's web address, like "http://127.0.0.1:8010",
	// without /api/v1.
	BaseURL string
	// Token is an API token; empty for anonymous reads.
	Token string
	// HTTP sends the requests. It should have no Timeout of its own, since
	// log and event streams last as long as the log or the caller.
	HTTP *http.Client
	// Timeout bounds each call that is not a stream; zero means none.
	Timeout time.Duration

	// pollInterval overrides waitPollInterval in tests.
	pollInterval time.Duration
}

// NewClient returns a client of the master at baseURL using token.
func NewClient(baseURL, token string) *Client {
	return &Client{
		BaseURL: strings.TrimRight(baseURL, "/"),
		Token:   token,
		HTTP:    &http.Client{},
		Timeout: defaultTimeout,
	}
}

// Force queues a build of builder and returns the request made.
func (c *Client) Force(ctx context.Context, builder string, req ForceRequest) (*drover.BuildRequest, error) {
	var out drover.BuildRequest
	if err := c.call(ctx, http.MethodPost, "/builders/"+url.PathEscape(builder)+"/force", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SendChange stores a change (its ID is ignored) and returns it as stored.
func (c *Client) SendChange(ctx context.Context, ch *drover.Change) (*drover.Change, error) {
	body := ChangeRequest{
		Repository: ch.Repository,
		Branch:     ch.Branch,
		Revision:   ch.Revision,
		Author:     ch.Author,
		Comments:   ch.Comments,
		Files:      ch.Files,
		Category:   ch.Category,
		Properties: ch.Properties,
		When:       ch.When,
	}
	var out drover.Change
	if err := c.call(ctx, http.MethodPost, "/changes", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Changes returns the latest changes, newest first; limit 0 means the
// server's default.
func (c *Client) Changes(ctx context.Context, limit int) ([]drover.Change, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []drover.Change
	return out, c.call(ctx, http.MethodGet, "/changes", q, nil, &out)
}

// Builds returns the builds f selects, newest first.
func (c *Client) Builds(ctx context.Context, f BuildQuery) ([]drover.Build, error) {
	q := url.Values{}
	setNonEmpty(q, "builder", f.Builder)
	setNonEmpty(q, "worker", f.Worker)
	setNonEmpty(q, "state", string(f.State))
	if f.Before > 0 {
		q.Set("before", strconv.FormatInt(f.Before, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out []drover.Build
	return out, c.call(ctx, http.MethodGet, "/builds", q, nil, &out)
}

// Build returns build id with its steps and logs.
func (c *Client) Build(ctx context.Context, id int64) (*BuildDetail, error) {
	var out BuildDetail
	if err := c.call(ctx, http.MethodGet, "/builds/"+strconv.FormatInt(id, 10), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// BuildByNumber returns build number of builder with its steps and logs.
func (c *Client) BuildByNumber(ctx context.Context, builder string, number int) (*BuildDetail, error) {
	var out BuildDetail
	path := "/builders/" + url.PathEscape(builder) + "/builds/" + strconv.Itoa(number)
	if err := c.call(ctx, http.MethodGet, path, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Steps returns the steps of build id.
func (c *Client) Steps(ctx context.Context, id int64) ([]drover.Step, error) {
	var out []drover.Step
	return out, c.call(ctx, http.MethodGet, "/builds/"+strconv.FormatInt(id, 10)+"/steps", nil, nil, &out)
}

// CancelBuild stops running build id; reason may be empty.
func (c *Client) CancelBuild(ctx context.Context, id int64, reason string) error {
	return c.call(ctx, http.MethodPost, "/builds/"+strconv.FormatInt(id, 10)+"/cancel", nil, CancelRequestBody{Reason: reason}, nil)
}

// Request returns build request id with the builds made for it.
func (c *Client) Request(ctx context.Context, id int64) (*RequestDetail, error) {
	var out RequestDetail
	if err := c.call(ctx, http.MethodGet, "/requests/"+strconv.FormatInt(id, 10), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Requests returns the build requests f selects, in queue order.
func (c *Client) Requests(ctx context.Context, f RequestQuery) ([]drover.BuildRequest, error) {
	q := url.Values{}
	setNonEmpty(q, "state", string(f.State))
	setNonEmpty(q, "builder", f.Builder)
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out []drover.BuildRequest
	return out, c.call(ctx, http.MethodGet, "/requests", q, nil, &out)
}

// CancelRequest cancels pending request id and returns it as it now is.
func (c *Client) CancelRequest(ctx context.Context, id int64, reason string) (*drover.BuildRequest, error) {
	var out drover.BuildRequest
	if err := c.call(ctx, http.MethodPost, "/requests/"+strconv.FormatInt(id, 10)+"/cancel", nil, CancelRequestBody{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Builders returns every builder of the config in force with its latest
// build and queue length.
func (c *Client) Builders(ctx context.Context) ([]BuilderSummary, error) {
	var out []BuilderSummary
	return out, c.call(ctx, http.MethodGet, "/builders", nil, nil, &out)
}

// Builder returns one builder with its recent builds.
func (c *Client) Builder(ctx context.Context, name string) (*BuilderSummary, error) {
	var out BuilderSummary
	if err := c.call(ctx, http.MethodGet, "/builders/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Eligibility explains, for every known worker, whether it may run builder.
func (c *Client) Eligibility(ctx context.Context, builder string) ([]drover.Eligibility, error) {
	var out []drover.Eligibility
	return out, c.call(ctx, http.MethodGet, "/builders/"+url.PathEscape(builder)+"/eligibility", nil, nil, &out)
}

// Workers returns every worker the master knows, by name.
func (c *Client) Workers(ctx context.Context) ([]drover.Worker, error) {
	var out []drover.Worker
	return out, c.call(ctx, http.MethodGet, "/workers", nil, nil, &out)
}

// Worker returns one worker with its recent builds.
func (c *Client) Worker(ctx context.Context, name string) (*WorkerDetail, error) {
	var out WorkerDetail
	if err := c.call(ctx, http.MethodGet, "/workers/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetAvailability sets an operator's availability for worker, with a
// reason; availability "auto" (or "") clears it so that the worker's own
// applies again. It needs an operator token and returns the worker as it
// now is.
func (c *Client) SetAvailability(ctx context.Context, worker, availability, reason string) (*drover.Worker, error) {
	var out drover.Worker
	body := AvailabilityRequest{Availability: availability, Reason: reason}
	if err := c.call(ctx, http.MethodPost, "/workers/"+url.PathEscape(worker)+"/availability", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ApproveWorker lets a worker that waits for approval (or was rejected)
// connect at its next attempt. It needs an admin token and returns the
// worker as it now is.
func (c *Client) ApproveWorker(ctx context.Context, worker string) (*drover.Worker, error) {
	return c.approval(ctx, worker, "approve")
}

// RejectWorker refuses a worker for good: its connections are refused and
// it stops trying. It needs an admin token and returns the worker as it
// now is.
func (c *Client) RejectWorker(ctx context.Context, worker string) (*drover.Worker, error) {
	return c.approval(ctx, worker, "reject")
}

func (c *Client) approval(ctx context.Context, worker, verb string) (*drover.Worker, error) {
	var out drover.Worker
	if err := c.call(ctx, http.MethodPost, "/workers/"+url.PathEscape(worker)+"/"+verb, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ConfigStatus returns the config in force and the outcome of the last
// load.
func (c *Client) ConfigStatus(ctx context.Context) (ConfigStatus, error) {
	var out ConfigStatus
	return out, c.call(ctx, http.MethodGet, "/config", nil, nil, &out)
}

// Reload makes the master load its config file again and returns the
// status of the config now in force. It needs an admin token. A refused
// config is an Invalid error whose message holds the file:line errors;
// the master keeps the config it had.
func (c *Client) Reload(ctx context.Context) (ConfigStatus, error) {
	var out ConfigStatus
	return out, c.call(ctx, http.MethodPost, "/config/reload", nil, nil, &out)
}

// Queue returns the pending build requests in the order the dispatcher
// serves them, each with why it is waiting.
func (c *Client) Queue(ctx context.Context) ([]drover.QueueEntry, error) {
	var out []drover.QueueEntry
	return out, c.call(ctx, http.MethodGet, "/queue", nil, nil, &out)
}

// Locks returns every lock instance with its holders and waiters.
func (c *Client) Locks(ctx context.Context) ([]drover.LockState, error) {
	var out []drover.LockState
	return out, c.call(ctx, http.MethodGet, "/locks", nil, nil, &out)
}

// LogInfo returns the index entry of log id: its size and whether it is
// complete.
func (c *Client) LogInfo(ctx context.Context, id int64) (*drover.Log, error) {
	var out drover.Log
	if err := c.call(ctx, http.MethodGet, "/logs/"+strconv.FormatInt(id, 10), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Version returns the master's program and protocol versions.
func (c *Client) Version(ctx context.Context) (*VersionInfo, error) {
	var out VersionInfo
	if err := c.call(ctx, http.MethodGet, "/version", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Site lists the masters sharing the master's database.
func (c *Client) Site(ctx context.Context) (*SiteStatus, error) {
	var out SiteStatus
	if err := c.call(ctx, http.MethodGet, "/masters", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Log copies the bytes of log id from offset to w. With follow it keeps
// copying live output until the log is complete or ctx is done; without,
// it copies what is stored now. It is a stream: Timeout does not apply.
func (c *Client) Log(ctx context.Context, id int64, offset int64, follow bool, w io.Writer) error {
	q := url.Values{}
	if offset > 0 {
		q.Set("offset", strconv.FormatInt(offset, 10))
	}
	if follow {
		q.Set("follow", "1")
	}
	path := "/logs/" + strconv.FormatInt(id, 10) + "/raw"
	resp, err := c.do(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("log %d: %w", id, ctx.Err())
		}
		return fmt.Errorf("log %d: %w", id, err)
	}
	return nil
}

// WaitRequest follows request id until a build for it has finished with a
// final (non-retry) result, or the request was cancelled. It returns that
// build, or nil when the request ended without one (cancelled before a
// build, or while waiting to be retried), and the request as it ended.
// Moments when the master cannot be reached (a restart) are waited out.
func (c *Client) WaitRequest(ctx context.Context, id int64) (*drover.Build, *drover.BuildRequest, error) {
	interval := c.pollInterval
	if interval <= 0 {
		interval = waitPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		d, err := c.Request(ctx, id)
		switch {
		case err == nil:
			// The request and its builds are read one after the other, so
			// a build may already show finished while the request does
			// not: wait for the request to end too, so that both agree.
			if d.Request.State != drover.RequestCancelled && d.Request.State != drover.RequestFinished {
				break
			}
			// Builds come newest first: the newest final one is the answer.
			for i := range d.Builds {
				b := &d.Builds[i]
				if b.State == drover.BuildFinished && b.Result != drover.Retry && b.Result != drover.ResultNone {
					return b, &d.Request, nil
				}
			}
			return nil, &d.Request, nil
		case drover.KindOf(err) == drover.Unavailable && ctx.Err() == nil:
			// The master may be restarting; it loses no request.
		default:
			return nil, nil, fmt.Errorf("wait for request %d: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("wait for request %d: %w", id, ctx.Err())
		case <-t.C:
		}
	}
}

// call sends a non-streaming request with body encoded as JSON (if not
// nil) and decodes the JSON answer into out (if not nil).
func (c *Client) call(ctx context.Context, method, path string, q url.Values, body, out any) error {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encode body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	resp, err := c.do(ctx, method, path, q, rd)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody)) // lets the connection be reused
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		}
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// do sends a request to path under /api/v1 and returns the response if its
// status is 2xx; otherwise it returns the server's error with its kind.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	u := c.BaseURL + "/api/v1" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, drover.Errorf(drover.Invalid, "%s %s: %w", method, u, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", method, u, ctx.Err())
		}
		return nil, drover.Errorf(drover.Unavailable, "unavailable: %s %s: %w", method, u, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, responseError(resp)
}

// responseError turns an error response into an error of the kind its
// status stands for, with the server's message.
func responseError(resp *http.Response) error {
	kind := kindOfStatus(resp.StatusCode)
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb errorBody
	msg := ""
	if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	} else if t := strings.TrimSpace(string(raw)); t != "" && !strings.HasPrefix(t, "<") {
		// Not ours: a proxy's plain-text answer is still worth showing;
		// an HTML error page is not.
		msg = t
	} else {
		msg = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if prefix := kind.String() + ": "; !strings.HasPrefix(msg, prefix) {
		msg = prefix + msg
	}
	return drover.Errorf(kind, "%s", msg)
}

// kindOfStatus is the inverse of StatusOf.
func kindOfStatus(status int) drover.Kind {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return drover.Invalid
	case http.StatusUnauthorized, http.StatusForbidden:
		return drover.Unauthorized
	case http.StatusNotFound:
		return drover.NotFound
	case http.StatusConflict:
		return drover.Conflict
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return drover.Unavailable
	}
	return drover.Internal
}

func setNonEmpty(q url.Values, key, value string) {
	if value != "" {
		q.Set(key, value)
	}
}
