package drover

import "fmt"

// Result is the outcome of a step, a build or a build request.
//
// The first three describe the code under test; exception and retry describe
// the infrastructure (a worker, the network, the master) and are the only
// results charged against a worker's health.
type Result string

const (
	ResultNone Result = ""          // not finished yet
	Success    Result = "success"   // the code passed
	Warnings   Result = "warnings"  // passed with warnings
	Failure    Result = "failure"   // the code failed
	Skipped    Result = "skipped"   // a step that did not run (condition false or build halted)
	Exception  Result = "exception" // infra: something broke that is not the code
	Retry      Result = "retry"     // infra: the build will run again elsewhere
	Cancelled  Result = "cancelled" // someone stopped it
)

// severity orders results so that merging keeps the worst, as Buildbot does.
var severity = map[Result]int{
	ResultNone: -1,
	Success:    0,
	Skipped:    0,
	Warnings:   1,
	Failure:    2,
	Exception:  3,
	Retry:      4,
	Cancelled:  5,
}

// ParseResult parses the name of a result.
func ParseResult(s string) (Result, error) {
	r := Result(s)
	if _, ok := severity[r]; !ok || r == ResultNone {
		return "", Errorf(Invalid, "unknown result %q (want success, warnings, failure, skipped, exception, retry or cancelled)", s)
	}
	return r, nil
}

// Worst returns the more severe of a and b.
func Worst(a, b Result) Result {
	if severity[b] > severity[a] {
		return b
	}
	return a
}

// IsInfra reports whether r blames the infrastructure rather than the code.
func (r Result) IsInfra() bool { return r == Exception || r == Retry }

// IsGood reports whether r lets a build continue as passing.
func (r Result) IsGood() bool { return r == Success || r == Warnings || r == Skipped }

func (r Result) String() string {
	if r == ResultNone {
		return "pending"
	}
	return string(r)
}

// RequestState is where a build request is in its life.
type RequestState string

const (
	RequestPending   RequestState = "pending"   // waiting for a worker
	RequestClaimed   RequestState = "claimed"   // a build was started for it
	RequestFinished  RequestState = "finished"  // its build ended with a final result
	RequestCancelled RequestState = "cancelled" // cancelled before or while building
)

// BuildState is where a build is in its life.
type BuildState string

const (
	BuildRunning  BuildState = "running"
	BuildFinished BuildState = "finished"
)

// StepState is where a step is in its life.
type StepState string

const (
	StepPending  StepState = "pending"
	StepRunning  StepState = "running"
	StepFinished StepState = "finished"
)

func (s StepState) String() string { return string(s) }

var _ fmt.Stringer = Result("")
