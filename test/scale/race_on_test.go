//go:build race

package scale

// raceEnabled reports whether the tests (and the binaries they build) run
// with the race detector, which slows them several times: figures logged by
// the tests say so.
const raceEnabled = true
