package e2e

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestNotSentWhenRedisIsDown: with Redis gone, nothing can be sent, and the
// service says so at once (503 + Retry-After), well under a second.
func TestNotSentWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	// Refused at once, not after waiting for a reply: with a 10 s reply
	// timeout the two cannot be mistaken for each other on a loaded machine
	// (CI saw a refusal take 1 s end to end while the service spent 2 ms).
	const replyTimeout = 10 * time.Second
	s := newStack(t, stackOptions{env: map[string]string{
		"ENGINE_REPLY_TIMEOUT": replyTimeout.String(), "SHUTDOWN_TIMEOUT": "15s"}})
	if status, _, _ := s.ensure("ok-before"); status != 200 {
		t.Fatalf("before the fault: %d", status)
	}
	s.redis.Kill()
	// A request racing the kill may have written its XADD to a connection
	// whose peer had just died: that one honestly gets 502 (maybe sent).
	// Once the service has noticed the outage, nothing can be sent.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := testenv.WaitHTTP(ctx, s.svc.URL+"/readyz", http.StatusServiceUnavailable); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		start := time.Now()
		status, header, body := s.ensure("ok-during")
		took := time.Since(start)
		expect(t, "redis down", status, header, body, 503, bodyNotSent)
		if header.Get("Retry-After") == "" {
			t.Error("no Retry-After")
		}
		if took >= replyTimeout/2 {
			t.Errorf("attempt %d took %s: it waited, as if for a reply (timeout %s)", i, took, replyTimeout)
		}
	}
}

// TestLostReplyWhileReaderIsDisconnected: the command went out, then Redis
// died; when the reply timeout runs out with the reader still disconnected,
// a reply may have been lost, so the answer is 502, not 202.
func TestLostReplyWhileReaderIsDisconnected(t *testing.T) {
	t.Parallel()
	// Redis must die before the timeout runs out, a step after the Engine
	// read the command: 5 s leaves room on a loaded CI machine.
	s := newStack(t, stackOptions{env: map[string]string{"ENGINE_REPLY_TIMEOUT": "5s"}})
	type answer struct {
		status int
		header http.Header
		body   string
	}
	done := make(chan answer, 1)
	go func() {
		status, header, body := s.ensure("silent-lost")
		done <- answer{status, header, body}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.engine.Await(ctx, "silent-lost"); err != nil {
		t.Fatal(err)
	}
	s.redis.Kill()
	a := <-done
	expect(t, "reader disconnected at timeout", a.status, a.header, a.body, 502, bodyEngineFailed)
}

// TestBusyBeyondMaxWaiting: with ENGINE_MAX_WAITING requests waiting, the
// next one is refused at once and sends nothing.
func TestBusyBeyondMaxWaiting(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{env: map[string]string{"ENGINE_MAX_WAITING": "3", "ENGINE_REPLY_TIMEOUT": "3s"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range []string{"silent-a", "silent-b", "silent-c"} {
		wg.Go(func() {
			if status, _, body := s.ensure(id); status != 202 {
				t.Errorf("%s: %d %s, want 202", id, status, body)
			}
		})
		if _, err := s.engine.Await(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// The Engine sees a command as soon as it is in the stream, a moment
	// before the service counts its XADD as done: wait for the count.
	for s.svc.Metric(t, "ensure_user_engine_commands_sent_total") < 3 {
		if ctx.Err() != nil {
			t.Fatal("the three sends were never counted")
		}
	}
	sentBefore := s.svc.Metric(t, "ensure_user_engine_commands_sent_total")
	status, header, body := s.ensure("ok-busy")
	expect(t, "busy", status, header, body, 503, bodyBusy)
	if header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if after := s.svc.Metric(t, "ensure_user_engine_commands_sent_total"); after != sentBefore {
		t.Errorf("XADDs went from %v to %v for a refused request", sentBefore, after)
	}
	wg.Wait()
	if n := len(s.engine.Commands("ok-busy")); n != 0 {
		t.Errorf("engine received %d commands for the refused request", n)
	}
	if status, _, _ := s.ensure("ok-after"); status != 200 {
		t.Errorf("after the burst: %d", status)
	}
}

// TestVerifierUnavailableUntilTheFirstKeySet: while the identity provider
// has been unreachable since start, a well-formed token is an
// infrastructure fault (503), junk is still the caller's (401); once the
// IdP answers, the service recovers by itself.
func TestVerifierUnavailableUntilTheFirstKeySet(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{idpDown: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testenv.WaitHTTP(ctx, s.svc.URL+"/readyz", http.StatusServiceUnavailable); err != nil {
		t.Fatal(err)
	}
	status, header, body := s.ensure("ok-early")
	expect(t, "no key set yet", status, header, body, 503, bodyVerifierDown)
	if header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	status, header, body = s.post("Bearer junk")
	expect(t, "junk while no key set", status, header, body, 401, bodyInvalidToken)

	s.idp.SetKeys(t, s.key)
	if err := s.svc.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if status, _, body := s.ensure("ok-late"); status != 200 {
		t.Fatalf("after the IdP came back: %d %s", status, body)
	}
}
