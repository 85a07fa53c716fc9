// Package api is Drover's REST JSON API under /api/v1, and the Go client
// that the drover command line uses to talk to it.
//
// The handler translates HTTP to calls on a Backend (the running master):
// reads go to the Backend's store, writes go through the Backend so that
// the master can wake its dispatcher and publish events. Error kinds from
// package drover become HTTP statuses here and become kinds again in the
// client, so a caller of Client sees the same drover.KindOf as the master
// produced. Logs and events stream as chunked text and server-sent events.
//
// docs/api.md describes every endpoint for people writing scripts.
package api
