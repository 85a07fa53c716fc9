package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"go.starlark.net/syntax"

	"github.com/drover-ci/drover"
)

// Error is one problem in a config, at a position.
type Error struct {
	// Pos is "file:line:col" or "file:line", the file relative to the
	// config's directory.
	Pos string
	Msg string

	file      string // for sorting: Pos, taken apart
	line, col int32
}

func (e *Error) Error() string { return e.Pos + ": " + e.Msg }

// lineBreaks keeps every error on one line (a message from fail() may hold
// newlines), so that each line of an ErrorList starts with a position.
var lineBreaks = strings.NewReplacer("\r\n", `\n`, "\n", `\n`, "\r", `\n`)

// newError makes an error at p, or at line 1 of file when p is unknown.
func newError(p syntax.Position, file, msg string) *Error {
	if p.IsValid() {
		file = p.Filename()
	}
	e := &Error{Msg: lineBreaks.Replace(msg), file: file, line: max(p.Line, 1), col: p.Col}
	if e.col > 0 {
		e.Pos = fmt.Sprintf("%s:%d:%d", e.file, e.line, e.col)
	} else {
		e.Pos = fmt.Sprintf("%s:%d", e.file, e.line)
	}
	return e
}

// sortErrors orders errors as a reader goes through the config: by file in
// load order, then by line and column. Errors found at one place keep the
// order they were found in.
func sortErrors(errs ErrorList, files []string) {
	rank := func(file string) int {
		if i := slices.Index(files, file); i >= 0 {
			return i
		}
		return len(files)
	}
	slices.SortStableFunc(errs, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(rank(a.file), rank(b.file)),
			cmp.Compare(a.line, b.line),
			cmp.Compare(a.col, b.col),
		)
	})
}

// ErrorList is every problem found in a config, in the order found. Load
// returns it wrapped in a *drover.Error of kind Invalid, so callers can
// either show the text or take the list apart with errors.As.
type ErrorList []*Error

// Error returns the problems one per line.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// invalid wraps a non-empty list in the error kind the edges understand.
func (l ErrorList) invalid() error {
	return &drover.Error{Kind: drover.Invalid, Msg: l.Error(), Err: l}
}
