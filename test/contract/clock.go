package contract

import (
	"context"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/ports"
)

// ClockHarness is one Clock under test. Advance moves it forward by d: a
// fake clock jumps, the system clock is simply left to run (nil).
type ClockHarness struct {
	Clock   ports.Clock
	Advance func(d time.Duration)
	// Settle waits until n timers are pending, so that Advance fires them
	// (nil for the system clock, whose timers need no help).
	Settle func(ctx context.Context, n int) error
}

// RunClock is the Clock contract: Now is UTC and moves forward; After fires
// once, at or after its deadline on that clock, and not before.
func RunClock(t *testing.T, h ClockHarness) {
	t.Helper()
	const d = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	start := h.Clock.Now()
	if start.Location() != time.UTC {
		t.Errorf("Now() is in %v, want UTC", start.Location())
	}
	fired := h.Clock.After(d)
	if h.Advance != nil {
		if err := h.Settle(ctx, 1); err != nil {
			t.Fatal(err)
		}
		h.Advance(d - time.Nanosecond)
		select {
		case <-fired:
			t.Fatal("After fired before its deadline")
		default:
		}
		h.Advance(time.Nanosecond)
	}
	select {
	case at := <-fired:
		if at.Before(start.Add(d)) {
			t.Errorf("After(%s) fired at %v, before start %v + d", d, at, start)
		}
		if now := h.Clock.Now(); now.Sub(start) < d {
			t.Errorf("Now() moved %s after After(%s) fired", now.Sub(start), d)
		}
	case <-ctx.Done():
		t.Fatal("After never fired")
	}
	select {
	case <-fired:
		t.Fatal("After fired twice")
	default:
	}
	if zero := h.Clock.After(0); h.Advance != nil {
		h.Advance(0)
		select {
		case <-zero:
		case <-ctx.Done():
			t.Fatal("After(0) never fired")
		}
	} else {
		select {
		case <-zero:
		case <-ctx.Done():
			t.Fatal("After(0) never fired")
		}
	}
}
