//go:build race

package logstore

// raceEnabled scales down the heaviest tests: the race detector slows
// compression an order of magnitude.
const raceEnabled = true
