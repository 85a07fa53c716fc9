// Package workerproto holds the worker protocol: the .proto contract, the
// generated gRPC code (committed, so a build needs no protoc), and the
// protocol version with its history.
//
// Regenerate with `go generate ./internal/workerproto` (needs protoc,
// protoc-gen-go and protoc-gen-go-grpc).
package workerproto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative worker.proto

// ProtocolVersion is the version of the worker protocol this build speaks.
// Every change a peer can observe moves it up by one, additive only; the
// history, with what each version added, is in docs/protocol.md. Both sides
// say their version and use only what both have.
const ProtocolVersion = 9

// MinProtocolVersion is the oldest worker protocol a master accepts: one
// version older than its own, so that a fleet upgrades the master first
// and its workers at leisure.
const MinProtocolVersion = ProtocolVersion - 1
