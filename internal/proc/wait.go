package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// pollEvery is how often the waits here look again: they watch other
// processes, which send no event.
const pollEvery = 20 * time.Millisecond

// WaitFor polls cond every 20 ms until it holds (nil), timeout passes, ctx
// ends, or exited is closed (the process it waits for died; nil when there
// is none).
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool, exited <-chan struct{}) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("the process exited")
		case <-deadline.C:
			return fmt.Errorf("not within %s", timeout)
		case <-tick.C:
		}
	}
	return nil
}

// WaitHTTP polls url with GET every 20 ms until it answers status or ctx
// ends; the error then says what it answered last.
func WaitHTTP(ctx context.Context, url string, status int) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == status {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never answered %d (last: %s): %w", url, status, last, ctx.Err())
		case <-tick.C:
		}
	}
}
