package redisbus

import (
	"testing"
	"time"
)

// TestDeadlinesAreShared: calls within the slack share one context, whose
// deadline is never beyond d from any of them and never nearer than
// d-slack; a call after the slack, or before the shared one was made (a
// clock step back), gets a new one.
func TestDeadlinesAreShared(t *testing.T) {
	t.Parallel()
	const d, slack = time.Second, 10 * time.Millisecond
	s := newDeadlines(d, slack)
	t0 := time.Now()
	first := s.at(t0)
	for _, off := range []time.Duration{0, time.Millisecond, slack - time.Nanosecond} {
		ctx := s.at(t0.Add(off))
		if ctx != first {
			t.Fatalf("at +%s: a new context within the slack", off)
		}
		dl, _ := ctx.Deadline()
		if left := dl.Sub(t0.Add(off)); left > d || left <= d-slack {
			t.Fatalf("at +%s: %s left, want (d-slack, d]", off, left)
		}
	}
	if s.at(t0.Add(slack)) == first {
		t.Fatal("the context outlived its slack")
	}
	later := s.at(t0.Add(slack))
	if s.at(t0) == later {
		t.Fatal("a call before the shared context was made reused it")
	}
}
