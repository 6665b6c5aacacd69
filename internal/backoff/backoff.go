// Package backoff spaces the retries of a loop that talks to a server which
// may be down (the Engine bus's reader, engine-sim): the first retry at
// once, so that a killed connection is replaced without delay, then
// exponentially longer waits with jitter, so that many clients do not
// reconnect in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is the wait before retry number retry+1: none the first time
// (retry 0), then doubling from lo up to hi, plus up to a quarter more at
// random.
func Delay(retry int, lo, hi time.Duration) time.Duration {
	if retry == 0 {
		return 0
	}
	d := min(lo<<min(retry-1, 16), hi)
	return d + rand.N(d/4+1)
}

// Wait waits Delay(retry, lo, hi), or less when ctx ends; it reports whether
// ctx is still live.
func Wait(ctx context.Context, retry int, lo, hi time.Duration) bool {
	d := Delay(retry, lo, hi)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
