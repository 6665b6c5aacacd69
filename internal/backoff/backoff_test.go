package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	t.Parallel()
	const lo, hi = 20 * time.Millisecond, time.Second
	tests := []struct {
		retry    int
		min, max time.Duration // max includes the quarter of jitter
	}{
		{0, 0, 0},
		{1, lo, lo + lo/4},
		{2, 2 * lo, 2*lo + lo/2},
		{3, 4 * lo, 5 * lo},
		{10, hi, hi + hi/4},
		{1000, hi, hi + hi/4}, // no overflow however long it fails
	}
	for _, tt := range tests {
		for range 50 {
			if d := Delay(tt.retry, lo, hi); d < tt.min || d > tt.max {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", tt.retry, d, tt.min, tt.max)
			}
		}
	}
}

func TestWaitEndsWithCtx(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	if !Wait(ctx, 0, time.Hour, time.Hour) {
		t.Error("the first retry waited or reported a dead ctx")
	}
	cancel()
	if Wait(ctx, 0, time.Hour, time.Hour) || Wait(ctx, 5, time.Hour, time.Hour) {
		t.Error("Wait reported a cancelled ctx as live")
	}
}
