package testenv

import (
	"context"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/proc"
	"github.com/ensure-user/ensure-user/internal/protocol"
)

// RequestStream is the stream the service sends its commands on by default,
// the one a ScriptedEngine reads.
const RequestStream = "engine:requests"

// script is how a ScriptedEngine answers a command, by the prefix of its
// user id:
//
//	ok-…       status ok, message = user id
//	legacy-…   no status, message = user id (the old Engine)
//	exists-…   status exists, message "user Already Exist"
//	pending-…  status pending
//	error-…    status error
//	silent-…   no reply at all
//
// Any other command gets no reply either: it is the test's to answer, or
// not, with Reply and Write. ok is false when there is no reply to send.
func script(req protocol.Request) (reply protocol.Reply, ok bool) {
	r := protocol.Reply{Function: "createUser", RequestID: req.RequestID, Message: req.UserID}
	switch prefix, _, _ := strings.Cut(req.UserID, "-"); prefix {
	case "ok":
		r.Status = "ok"
	case "legacy":
	case "exists":
		r.Status, r.Message = "exists", "user Already Exist"
	case "pending":
		r.Status = "pending"
	case "error":
		r.Status, r.Message = "error", "engine failure"
	default: // silent, and every command the test answers itself
		return r, false
	}
	return r, true
}

// EngineOption configures StartScriptedEngine.
type EngineOption func(*ScriptedEngine)

// WithEngineDelay delays each reply by a random time below maxDelay, so
// that replies come back in random order.
func WithEngineDelay(maxDelay time.Duration) EngineOption {
	return func(e *ScriptedEngine) { e.maxDelay = maxDelay }
}

// ScriptedEngine is an Engine a test drives. It reads RequestStream on a
// connection of its own, straight to Redis (never through a proxy the test
// breaks), records every command, and answers each by the prefix of its user
// id (see script); a command it leaves unanswered is the test's to answer,
// or not, with Reply and Write. It keeps reading across Redis kills and
// restarts, from the last entry it saw. Its methods are safe for concurrent
// use.
type ScriptedEngine struct {
	client   rueidis.Client
	maxDelay time.Duration

	mu      sync.Mutex
	seen    map[string][]protocol.Request // by user id
	total   int
	arrived chan struct{} // closed and replaced at each command
}

// StartScriptedEngine starts an Engine on the Redis at redisAddr (host:port)
// that replies at once unless opts say otherwise. It stops at cleanup.
func StartScriptedEngine(t testing.TB, redisAddr string, opts ...EngineOption) *ScriptedEngine {
	t.Helper()
	e := &ScriptedEngine{client: lastingClient(t, redisAddr),
		seen: map[string][]protocol.Request{}, arrived: make(chan struct{})}
	for _, o := range opts {
		o(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return e
}

// lastingClient returns a client of the test's own for addr that connects
// lazily and again after every loss, closed at cleanup. Unlike Redis.Client
// it survives Kill and Restart, for goroutines.
func lastingClient(t testing.TB, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{addr},
		DisableCache:      true,
		ForceSingleClient: true, // construct even while the server is down
		DisableRetry:      true,
		AlwaysPipelining:  true, // notice killed connections at once
		Dialer:            net.Dialer{Timeout: time.Second},
	})
	if c == nil {
		t.Fatalf("redis client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func (e *ScriptedEngine) run(ctx context.Context) {
	last := "0-0"
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := e.client.Do(rctx, e.client.B().Xread().Count(1000).Block(200).Streams().
			Key(RequestStream).Id(last).Build()).AsXRead()
		cancel()
		if err != nil {
			if rueidis.IsRedisNil(err) {
				continue
			}
			select { // Redis is down or restarting: try again shortly
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		for _, entry := range res[RequestStream] {
			last = entry.ID
			req, err := protocol.DecodeRequest([]byte(entry.FieldValues[protocol.Field]))
			if err != nil {
				continue
			}
			e.record(req)
			reply, ok := script(req)
			if !ok {
				continue
			}
			if e.maxDelay <= 0 {
				e.send(ctx, req.ReplyTo, reply)
				continue
			}
			wg.Go(func() {
				select {
				case <-time.After(rand.N(e.maxDelay)):
					e.send(ctx, req.ReplyTo, reply)
				case <-ctx.Done():
				}
			})
		}
	}
}

func (e *ScriptedEngine) send(ctx context.Context, stream string, reply protocol.Reply) {
	_ = e.client.Do(ctx, e.client.B().Xadd().Key(stream).Id("*").FieldValue().
		FieldValue(protocol.Field, string(protocol.EncodeReply(reply))).Build()).Error()
}

func (e *ScriptedEngine) record(req protocol.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen[req.UserID] = append(e.seen[req.UserID], req)
	e.total++
	close(e.arrived)
	e.arrived = make(chan struct{})
}

// Commands returns the commands read for userID, oldest first.
func (e *ScriptedEngine) Commands(userID string) []protocol.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]protocol.Request(nil), e.seen[userID]...)
}

// Total is the number of commands read.
func (e *ScriptedEngine) Total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.total
}

// Await waits until the Engine has read a command for userID and returns
// the first, or fails when ctx ends.
func (e *ScriptedEngine) Await(ctx context.Context, userID string) (protocol.Request, error) {
	var req protocol.Request
	err := e.wait(ctx, func() bool {
		if got := e.seen[userID]; len(got) > 0 {
			req = got[0]
			return true
		}
		return false
	})
	return req, err
}

// AwaitTotal waits until the Engine has read n commands in all, or fails
// when ctx ends.
func (e *ScriptedEngine) AwaitTotal(ctx context.Context, n int) error {
	return e.wait(ctx, func() bool { return e.total >= n })
}

// wait waits until cond, called with e.mu held, holds.
func (e *ScriptedEngine) wait(ctx context.Context, cond func() bool) error {
	for {
		e.mu.Lock()
		ok, arrived := cond(), e.arrived
		e.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Reply answers req on its reply stream with status (and message = user
// id). It first waits until Redis answers the Engine, so that a reply the
// test writes right after a restart is written once, not lost to a stale
// connection.
func (e *ScriptedEngine) Reply(t testing.TB, req protocol.Request, status string) {
	t.Helper()
	err := proc.WaitFor(context.Background(), 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return e.client.Do(ctx, e.client.B().Ping().Build()).Error() == nil
	}, nil)
	if err != nil {
		t.Fatalf("the Engine cannot reach Redis: %v", err)
	}
	r := protocol.Reply{Function: "createUser", RequestID: req.RequestID, Message: req.UserID, Status: status}
	e.Write(t, req.ReplyTo, protocol.Field, string(protocol.EncodeReply(r)))
}

// Write adds an entry with the given field/value pairs to stream, whatever
// they hold.
func (e *ScriptedEngine) Write(t testing.TB, stream string, fieldValues ...string) {
	t.Helper()
	e.WriteID(t, stream, "*", fieldValues...)
}

// WriteID is Write with an explicit entry id.
func (e *ScriptedEngine) WriteID(t testing.TB, stream, id string, fieldValues ...string) {
	t.Helper()
	e.Do(t, append([]string{"XADD", stream, id}, fieldValues...)...)
}

// Do runs one raw command on the Engine's connection and fails the test on
// any error.
func (e *ScriptedEngine) Do(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.client.Do(ctx, e.client.B().Arbitrary(args[0]).Args(args[1:]...).Build()).Error(); err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
}
