package testenv

import (
	"testing"
	"time"
)

// Eventually polls cond every 5 ms until it holds, and fails t when within
// has passed: for state that changes on its own (a process dying, a
// reconnect, Redis catching up), with no event to wait on.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		<-tick.C
	}
}
