// Package workerproto holds the worker protocol: the .proto contract, the
// generated gRPC code (committed, so a build needs no protoc), and the
// protocol version with its history.
//
// Regenerate with `go generate ./internal/workerproto` (needs protoc,
// protoc-gen-go and protoc-gen-go-grpc).
package workerproto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative worker.proto

// ProtocolVersion is the version of the worker protocol this build speaks.
// Within major version 1 only additive changes are made; a master accepts
// any worker whose version is at least MinProtocolVersion.
//
// History:
//
//	1  first version: Enroll, Connect with hello/welcome, run, cancel,
//	   numbered output, ack, finished, facts updates.
//	   (additive) Ack.finished: the master stored the command's Finished.
//	   (additive) Hello and FactsUpdate availability_reason.
//	   (additive) Welcome.probes, probe_interval_ms and SetProbes: the
//	   master's probes, run by the worker, reported as facts.
//	   (additive) EnrollResponse.probes.
//	   (additive) RunCommand.transfer and the UploadStatus, Upload and
//	   Download RPCs: file transfer steps, chunked, sha256 per file,
//	   uploads resumable.
//	   (additive) WorkerMessage.step_update (StepUpdate): links and
//	   properties a running command publishes through the worker.
//	   (additive) DownloadRequest.have and partial (DownloadHave,
//	   DownloadPartial), DownloadFileHeader.offset: downloads resumable;
//	   either side without them sends or expects every file from 0.
const ProtocolVersion = 1

// MinProtocolVersion is the oldest worker protocol a master accepts.
const MinProtocolVersion = 1
