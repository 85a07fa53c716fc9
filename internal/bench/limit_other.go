//go:build !unix

package bench

// raiseFileLimit has nothing to raise off Unix.
func raiseFileLimit() error { return nil }
