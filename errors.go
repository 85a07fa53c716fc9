package drover

import (
	"errors"
	"fmt"
)

// Kind classifies an error so that edges (HTTP, gRPC, the CLI) can map it to
// a status without looking at its text. Inside, errors carry context by
// wrapping; only the kind crosses the boundary.
type Kind int

const (
	Internal     Kind = iota // a bug or an unexpected failure; details stay in the log
	Invalid                  // the caller sent something malformed
	NotFound                 // the thing named does not exist
	Conflict                 // the thing exists, or is in a state that forbids the change
	Unauthorized             // missing or wrong credentials, or not allowed
	Unavailable              // try again later: shutting down, no connection
)

func (k Kind) String() string {
	switch k {
	case Invalid:
		return "invalid"
	case NotFound:
		return "not found"
	case Conflict:
		return "conflict"
	case Unauthorized:
		return "unauthorized"
	case Unavailable:
		return "unavailable"
	}
	return "internal"
}

// Error is an error with a kind and a message meant for the caller.
type Error struct {
	Kind Kind
	Msg  string
	Err  error // optional cause, for errors.Is/As
}

// Error returns the message; a message made by Errorf already holds the text
// of the error it wraps.
func (e *Error) Error() string {
	switch {
	case e.Msg != "":
		return e.Msg
	case e.Err != nil:
		return e.Err.Error()
	}
	return e.Kind.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf makes an *Error of kind k with a formatted message. A %w verb wraps.
func Errorf(k Kind, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: k, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// KindOf returns the kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Message returns the text safe to show a caller: the message of the first
// *Error in err's chain, or a generic one for internal errors, whose details
// belong in the log, not in a response.
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Kind != Internal {
		return e.Error()
	}
	return "internal error"
}
