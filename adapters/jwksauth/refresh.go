package jwksauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/ports"
)

// refresher keeps the current key set. One goroutine (run) does every fetch:
// the first at once, retried with exponential backoff capped at minRefresh
// until it succeeds, then one every refresh interval. Verify may ask it for an
// extra fetch when a token names an unknown kid (kidRefresh): at most one
// such request per minRefresh starts a fetch, and every request that arrives
// while a fetch is due or running shares it. Random kids thus cost the
// identity provider at most one request per minRefresh.
type refresher struct {
	fetch      func(context.Context) ([]byte, error)
	parse      func([]byte) (*keySet, error)
	onChange   func(*keySet) // called after a different set became current
	clock      ports.Clock
	log        *zap.Logger
	m          *metrics
	refresh    time.Duration
	minRefresh time.Duration
	timeout    time.Duration

	cur  atomic.Pointer[keySet]
	kick chan struct{} // capacity 1: a kid refresh is wanted
	quit <-chan struct{}

	mu      sync.Mutex
	busy    bool          // a fetch is running
	kicked  bool          // a kid refresh was requested and not started yet
	lastKid time.Time     // when the last kid refresh was requested
	done    chan struct{} // closed when the next or running fetch completes
	fetches int           // completed fetches, for tests to step the refresher
	lastErr error         // of the last fetch; nil after a success
}

// current returns the key set in use, nil until the first good fetch.
func (r *refresher) current() *keySet { return r.cur.Load() }

// run fetches until ctx ends.
func (r *refresher) run(ctx context.Context) {
	first := min(time.Second, r.minRefresh)
	backoff := first
	for {
		wait := r.refresh
		if err := r.fetchOnce(ctx); err != nil {
			wait, backoff = backoff, min(2*backoff, r.minRefresh)
		} else {
			backoff = first
		}
		timer := r.clock.After(wait)
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return
			case <-timer:
				waiting = false
			case <-r.kick:
				// A kid refresh does not move the schedule.
				_ = r.fetchOnce(ctx)
			}
		}
	}
}

// fetchOnce fetches and parses the key set and makes it current if valid.
// A failure leaves the last good set in use.
func (r *refresher) fetchOnce(ctx context.Context) error {
	r.mu.Lock()
	r.busy, r.kicked = true, false
	select {
	case <-r.kick: // this fetch serves the pending request
	default:
	}
	r.mu.Unlock()

	err := r.load(ctx)
	switch {
	case ctx.Err() != nil: // shutting down: nothing to report
	case err != nil && r.cur.Load() == nil:
		r.m.refreshFailed.Inc()
		r.log.Warn("jwks fetch failed; no key set loaded yet", zap.Error(err))
	case err != nil:
		r.m.refreshFailed.Inc()
		r.log.Warn("jwks refresh failed; keeping the last good key set", zap.Error(err))
	default:
		r.m.refreshOK.Inc()
	}

	r.mu.Lock()
	r.busy = false
	r.fetches++
	r.lastErr = err
	close(r.done)
	r.done = make(chan struct{})
	r.mu.Unlock()
	return err
}

func (r *refresher) load(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	body, err := r.fetch(ctx)
	if err != nil {
		return err
	}
	set, err := r.parse(body)
	if err != nil {
		return err
	}
	if old := r.cur.Load(); old != nil && old.digest == set.digest {
		return nil // unchanged: keep the snapshot, and the cache entries tied to it
	}
	r.cur.Store(set)
	r.m.keys.Set(float64(set.size))
	r.log.Info("jwks key set loaded", zap.Int("keys", set.size))
	r.onChange(set)
	return nil
}

// kidRefresh asks for a fetch because a token names a kid the current set
// lacks, and waits for it, bounded by ctx. It returns at once when rate-limited.
//
// A fetch already running may have started before the identity provider
// published the kid, so sharing it is not enough: when the rate limit allows,
// the request also queues the fetch after it, and waits for that one.
func (r *refresher) kidRefresh(ctx context.Context) {
	now := r.clock.Now()
	r.mu.Lock()
	allowed := r.lastKid.IsZero() || now.Sub(r.lastKid) >= r.minRefresh
	target := r.fetches + 1 // the fetch that is due or running, or the one kicked now
	switch {
	case r.kicked: // a kid fetch is due: it starts after this request arrived
	case r.busy && !allowed: // share the running fetch
	case allowed:
		if r.busy {
			target++ // the running fetch, then the one queued here
		}
		r.lastKid = now
		r.kicked = true
		r.kick <- struct{}{} // never blocks: kick is empty while !kicked
		r.m.unknownKid.Inc()
	default:
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	_ = r.awaitFetches(ctx, target)
}

// awaitFetches blocks until n fetches have completed in all, ctx ends, or
// the refresher stops.
func (r *refresher) awaitFetches(ctx context.Context, n int) error {
	for {
		r.mu.Lock()
		got, done := r.fetches, r.done
		r.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.quit:
			return errors.New("jwks refresher stopped")
		}
	}
}

// ready is nil once a key set is loaded; otherwise it says why not.
func (r *refresher) ready() error {
	if r.cur.Load() != nil {
		return nil
	}
	r.mu.Lock()
	err := r.lastErr
	r.mu.Unlock()
	if err == nil {
		return errors.New("jwks: no key set loaded yet")
	}
	return fmt.Errorf("jwks: no key set loaded yet: last fetch failed: %w", err)
}
