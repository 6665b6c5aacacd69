package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const endpoint = "/api/v1/auth/ensure-user"

// The answers of the contract, byte for byte, by outcome name. Only
// "confirmed" is a correct answer in a load test: the Engine (engine-sim)
// confirms every createUser in time.
var answers = map[string]string{
	`{"success":true,"message":"User ensured in Engine and DBStorage"}`:   "confirmed",
	`{"success":true,"message":"User creation initiated"}`:                "initiated",
	`{"error":"No token provided."}`:                                      "no_token",
	`{"error":"Invalid or expired token."}`:                               "invalid_token",
	`{"error":"Invalid token payload."}`:                                  "invalid_payload",
	`{"error":"Failed to ensure user, but request was sent to Engine"}`:   "engine_failed",
	`{"error":"Engine unavailable: user creation request was not sent."}`: "not_sent",
	`{"error":"Service busy: user creation request was not sent."}`:       "busy",
	`{"error":"Token verification unavailable."}`:                         "verifier_unavailable",
	`{"error":"Internal server error."}`:                                  "internal_error",
	`{"error":"Request body too large: this endpoint takes no body."}`:    "too_large",
	`{"error":"Request header fields too large."}`:                        "header_too_large",
	`{"error":"Method Not Allowed"}`:                                      "method_not_allowed",
	`{"error":"Not Found"}`:                                               "not_found",
	`{"error":"Service Unavailable"}`:                                     "unavailable",
}

// okStatus and okOutcome are the only correct answer.
const (
	okStatus  = http.StatusOK
	okOutcome = "confirmed"
)

// tally is what one worker saw; tallies are merged after a run.
type tally struct {
	lat      []time.Duration
	status   map[string]int64
	outcomes map[string]int64
	errors   []string // the first few distinct problems
	buf      bytes.Buffer
}

func newTally() *tally {
	return &tally{status: map[string]int64{}, outcomes: map[string]int64{}}
}

func (t *tally) problem(s string) {
	if len(t.errors) < 5 && !slices.Contains(t.errors, s) {
		t.errors = append(t.errors, s)
	}
}

func (t *tally) merge(o *tally) {
	t.lat = append(t.lat, o.lat...)
	for k, v := range o.status {
		t.status[k] += v
	}
	for k, v := range o.outcomes {
		t.outcomes[k] += v
	}
	for _, e := range o.errors {
		t.problem(e)
	}
}

// post sends one ensure-user request with auth as the Authorization header
// and records its answer and its latency since start.
func (t *tally) post(ctx context.Context, client *http.Client, url, auth string, start time.Time) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		t.outcomes["request_error"]++
		t.problem(err.Error())
		return
	}
	req.Header["Authorization"] = []string{auth}
	resp, err := client.Do(req)
	if err != nil {
		t.lat = append(t.lat, time.Since(start))
		t.status["transport_error"]++
		t.outcomes["transport_error"]++
		t.problem(err.Error())
		return
	}
	t.buf.Reset()
	_, err = t.buf.ReadFrom(io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	t.lat = append(t.lat, time.Since(start))
	t.status[strconv.Itoa(resp.StatusCode)]++
	if err != nil {
		t.outcomes["read_error"]++
		t.problem("read body: " + err.Error())
		return
	}
	outcome, known := answers[t.buf.String()]
	if !known {
		outcome = "unexpected_body"
	}
	t.outcomes[outcome]++
	if resp.StatusCode != okStatus || outcome != okOutcome {
		t.problem(fmt.Sprintf("%d %.200s", resp.StatusCode, t.buf.String()))
	}
}

// newTransport is the load generator's HTTP client side: keep-alive
// connections, as many idle ones kept per instance as there are workers, no
// compression, no proxy, HTTP/1.1.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          0, // no total limit
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ResponseHeaderTimeout: 30 * time.Second,
		ForceAttemptHTTP2:     false,
	}
}

// loadResult is what a load run produced.
type loadResult struct {
	tally     *tally
	elapsed   time.Duration
	exhausted bool  // the token pool ran out before the duration
	missed    int64 // open loop: sends skipped because maxInFlight requests were pending
	used      int   // closed loop: tokens taken, from the start of the slice given
}

// closedLoop runs conc workers, each sending its next request as soon as the
// previous one was answered, for dur or until tokens run out (each token is
// used once, in order; the result says how many were taken). It returns when
// every request sent has been answered. Worker i talks to
// targets[i % len(targets)].
func closedLoop(ctx context.Context, client *http.Client, targets []string, conc int, tokens []string, dur time.Duration) loadResult {
	var (
		next int64 = -1
		wg   sync.WaitGroup
		mu   sync.Mutex
		all  = newTally()
		out  atomic.Bool
	)
	start := time.Now()
	deadline := start.Add(dur)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := newTally()
			t.lat = make([]time.Duration, 0, 1024)
			url := targets[w%len(targets)] + endpoint
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := atomic.AddInt64(&next, 1)
				if i >= int64(len(tokens)) {
					out.Store(true)
					break
				}
				t.post(ctx, client, url, tokens[i], time.Now())
			}
			mu.Lock()
			all.merge(t)
			mu.Unlock()
		}()
	}
	wg.Wait()
	used := int(min(atomic.LoadInt64(&next)+1, int64(len(tokens))))
	return loadResult{tally: all, elapsed: time.Since(start), exhausted: out.Load(), used: used}
}

// openLoop sends requests at a fixed rate for dur, whatever the answers
// take. Latency counts from the moment a request was due, so a stalled
// service cannot hide its queueing (no coordinated omission). At most
// maxInFlight requests are pending; a send due beyond that is counted as
// missed.
func openLoop(ctx context.Context, client *http.Client, targets []string, rate float64, tokens []string, dur time.Duration, maxInFlight int) loadResult {
	const shards = 64
	var (
		wg      sync.WaitGroup
		tallies [shards]struct {
			sync.Mutex
			t *tally
		}
		missed int64
		sem    = make(chan struct{}, maxInFlight)
		sent   int
	)
	for i := range tallies {
		tallies[i].t = newTally()
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	tick := time.NewTicker(max(time.Millisecond, interval))
	defer tick.Stop()
	exhausted := false
loop:
	for {
		now := time.Now()
		if now.Sub(start) >= dur || ctx.Err() != nil {
			break
		}
		due := int(float64(now.Sub(start)) / float64(interval))
		for ; sent < due; sent++ {
			if sent >= len(tokens) {
				exhausted = true
				break loop
			}
			at := start.Add(time.Duration(sent) * interval)
			select {
			case sem <- struct{}{}:
			default:
				missed++
				continue
			}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				// Each request has a tally of its own while in flight; it
				// is folded into a shard's after the answer.
				t := &tally{status: map[string]int64{}, outcomes: map[string]int64{}, lat: make([]time.Duration, 0, 1)}
				t.post(ctx, client, targets[i%len(targets)]+endpoint, tokens[i], at)
				<-sem
				s := &tallies[i%shards]
				s.Lock()
				s.t.merge(t)
				s.Unlock()
			}(sent)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	wg.Wait()
	all := newTally()
	for i := range tallies {
		all.merge(tallies[i].t)
	}
	return loadResult{tally: all, elapsed: time.Since(start), exhausted: exhausted, missed: missed}
}

// burst sends one request per token, all at once: every request has its own
// connection, opened beforehand (at most 256 dials at a time, with a GET
// /livez), and they all start together. Request i goes to
// targets[i % len(targets)].
func burst(ctx context.Context, targets []string, tokens []string, timeout time.Duration) (loadResult, error) {
	n := len(tokens)
	clients := make([]*http.Client, n)
	dials := make(chan struct{}, 256)
	var (
		warm    sync.WaitGroup
		mu      sync.Mutex
		warmErr error
	)
	for i := range n {
		tr := newTransport(1)
		tr.MaxConnsPerHost = 1
		clients[i] = &http.Client{Transport: tr, Timeout: timeout}
		warm.Add(1)
		go func() {
			defer warm.Done()
			dials <- struct{}{}
			defer func() { <-dials }()
			resp, err := clients[i].Get(targets[i%len(targets)] + "/livez")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			if err != nil {
				mu.Lock()
				warmErr = fmt.Errorf("open connection %d: %w", i, err)
				mu.Unlock()
			}
		}()
	}
	warm.Wait()
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
	if warmErr != nil {
		return loadResult{}, warmErr
	}

	var wg sync.WaitGroup
	all := newTally()
	gate := make(chan struct{})
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := newTally()
			<-gate
			t.post(ctx, clients[i], targets[i%len(targets)]+endpoint, tokens[i], start)
			mu.Lock()
			all.merge(t)
			mu.Unlock()
		}()
	}
	start = time.Now()
	close(gate)
	wg.Wait()
	return loadResult{tally: all, elapsed: time.Since(start)}, nil
}
