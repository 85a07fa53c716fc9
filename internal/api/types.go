package api

import (
	"time"

	"github.com/drover-ci/drover"
)

// ForceRequest is the body of POST /api/v1/builders/{name}/force: the code
// to build and the custom properties, priority and reason of the request.
// Empty Source fields mean the builder's defaults (the branch head).
type ForceRequest struct {
	Repository string            `json:"repository,omitempty"`
	Branch     string            `json:"branch,omitempty"`
	Revision   string            `json:"revision,omitempty"`
	Properties drover.Properties `json:"properties,omitempty"`
	Priority   int               `json:"priority,omitempty"`
	// Reason defaults to "forced by <role> via API".
	Reason string `json:"reason,omitempty"`
}

// CancelRequestBody is the optional body of the cancel endpoints.
type CancelRequestBody struct {
	Reason string `json:"reason,omitempty"`
}

// ChangeRequest is the body of POST /api/v1/changes. It is drover.Change
// without the ID, which the store assigns; a zero When means now.
type ChangeRequest struct {
	Repository string            `json:"repository"`
	Branch     string            `json:"branch"`
	Revision   string            `json:"revision"`
	Author     string            `json:"author,omitempty"`
	Comments   string            `json:"comments,omitempty"`
	Files      []string          `json:"files,omitempty"`
	Category   string            `json:"category,omitempty"`
	Properties drover.Properties `json:"properties,omitempty"`
	When       time.Time         `json:"when,omitzero"`
}

// BuilderSummary is a builder as the builders endpoints show it: the
// builder's own fields at the top level, with its latest build and the
// number of requests waiting for it. RecentBuilds is only filled by the
// single-builder endpoint.
type BuilderSummary struct {
	drover.Builder
	LastBuild    *drover.Build  `json:"last_build"`
	Pending      int            `json:"pending"`
	RecentBuilds []drover.Build `json:"recent_builds,omitzero"`
}

// BuildQuery selects builds for GET /api/v1/builds. Zero fields select
// everything; builds come newest first.
type BuildQuery struct {
	Builder string
	Worker  string
	State   drover.BuildState
	// Before, when set, returns only builds with a smaller ID, for paging.
	Before int64
	Limit  int // 0: the server's default of 100
}

// RequestQuery selects build requests for GET /api/v1/requests. Requests
// come in queue order.
type RequestQuery struct {
	State   drover.RequestState
	Builder string
	Limit   int // 0: no limit
}

// BuildDetail is a build with its steps and their logs.
type BuildDetail struct {
	Build drover.Build  `json:"build"`
	Steps []drover.Step `json:"steps"`
	Logs  []drover.Log  `json:"logs"`
}

// RequestDetail is a build request with the builds made for it, newest
// first (more than one when infra failures made it retry).
type RequestDetail struct {
	Request drover.BuildRequest `json:"request"`
	Builds  []drover.Build      `json:"builds"`
}

// WorkerDetail is a worker with its recent builds, newest first.
type WorkerDetail struct {
	drover.Worker
	Builds []drover.Build `json:"builds"`
}

// VersionInfo is the answer of GET /api/v1/version.
type VersionInfo struct {
	Version  string `json:"version,omitempty"`
	Protocol int    `json:"protocol"`
	// Master is the ID of the master that answered, in its site.
	Master string `json:"master,omitempty"`
}

// SiteStatus is the masters sharing one database (GET /api/v1/masters).
type SiteStatus struct {
	// This is the ID of the master that answered.
	This    string         `json:"this"`
	Masters []MasterStatus `json:"masters"`
}

// MasterStatus is one master of a site. A master is alive while its
// heartbeat is younger than the site timeout.
type MasterStatus struct {
	drover.Master
	Alive bool `json:"alive"`
}

// LogEnd is the data of the final `end` event of a log stream: the log's
// size once complete.
type LogEnd struct {
	Offset int64 `json:"offset"`
}

// errorBody is the shape of every error response.
type errorBody struct {
	Error string `json:"error"`
}

// AvailabilityRequest is the body of POST
// /api/v1/workers/{name}/availability: an operator's availability for the
// worker (eager, reluctant, draining or offline), which wins over the
// worker's own until cleared with "auto" (or ""), and why.
type AvailabilityRequest struct {
	Availability string `json:"availability"`
	Reason       string `json:"reason,omitempty"`
}

// ConfigStatus is the config in force and the outcome of the last load.
type ConfigStatus struct {
	Path      string    `json:"path"`
	Hash      string    `json:"hash"`
	LoadedAt  time.Time `json:"loaded_at"`
	Builders  int       `json:"builders"`
	LastError string    `json:"last_error,omitempty"` // of the last refused load, if it came after LoadedAt
	ErrorAt   time.Time `json:"error_at,omitzero"`
	// Differs, in a site of several masters, names the master whose
	// config (by hash) this master's differs from, as of the last reload
	// one of them asked of the others: each reads its own file, so a file
	// not deployed everywhere shows here.
	Differs     string `json:"differs_from,omitempty"`
	DiffersHash string `json:"differs_hash,omitempty"`
}
