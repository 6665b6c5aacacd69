package faults

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/protocol"
)

// scriptedEngine is an Engine the test drives: it reads the request stream
// on a connection of its own (straight to Redis, never through the proxy),
// answers users whose id starts with "ok-" at once with status ok, and
// leaves every other command for the test to answer, or not, with Reply and
// Write. It keeps reading across Redis kills and restarts, from the last
// entry it saw.
type scriptedEngine struct {
	client rueidis.Client

	mu      sync.Mutex
	seen    map[string][]protocol.Request // by user id
	arrived chan struct{}                 // closed and replaced at each command
}

func startScriptedEngine(t *testing.T, redisAddr string) *scriptedEngine {
	t.Helper()
	e := &scriptedEngine{client: newRedisClient(t, redisAddr), seen: map[string][]protocol.Request{},
		arrived: make(chan struct{})}
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

func (e *scriptedEngine) run(ctx context.Context) {
	last := "0-0"
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := e.client.Do(rctx, e.client.B().Xread().Count(100).Block(200).Streams().
			Key(requestStream).Id(last).Build()).AsXRead()
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
		for _, entry := range res[requestStream] {
			last = entry.ID
			req, err := protocol.DecodeRequest([]byte(entry.FieldValues[protocol.Field]))
			if err != nil {
				continue
			}
			if strings.HasPrefix(req.UserID, "ok-") {
				reply := protocol.Reply{Function: "createUser", RequestID: req.RequestID, Message: req.UserID, Status: "ok"}
				_ = e.client.Do(ctx, e.client.B().Xadd().Key(req.ReplyTo).Id("*").FieldValue().
					FieldValue(protocol.Field, string(protocol.EncodeReply(reply))).Build()).Error()
			}
			e.mu.Lock()
			e.seen[req.UserID] = append(e.seen[req.UserID], req)
			close(e.arrived)
			e.arrived = make(chan struct{})
			e.mu.Unlock()
		}
	}
}

// await waits until the Engine has read a command for userID and returns it.
func (e *scriptedEngine) await(t *testing.T, userID string) protocol.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		e.mu.Lock()
		got, arrived := e.seen[userID], e.arrived
		e.mu.Unlock()
		if len(got) > 0 {
			return got[0]
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			t.Fatalf("the Engine never read a command for %q", userID)
		}
	}
}

// Reply answers req on its reply stream with status (and message = user id).
// It first waits until Redis answers the Engine, so that a reply the test
// writes right after a restart is written once, not lost to a stale
// connection.
func (e *scriptedEngine) Reply(t *testing.T, req protocol.Request, status string) {
	t.Helper()
	err := poll(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return e.client.Do(ctx, e.client.B().Ping().Build()).Error() == nil
	})
	if err != nil {
		t.Fatalf("the Engine cannot reach Redis: %v", err)
	}
	r := protocol.Reply{Function: "createUser", RequestID: req.RequestID, Message: req.UserID, Status: status}
	e.Write(t, replyStream, protocol.Field, string(protocol.EncodeReply(r)))
}

// Write adds an entry with the given field/value pairs to stream, whatever
// they hold.
func (e *scriptedEngine) Write(t *testing.T, stream string, fieldValues ...string) {
	t.Helper()
	e.WriteID(t, stream, "*", fieldValues...)
}

// WriteID is Write with an explicit entry id.
func (e *scriptedEngine) WriteID(t *testing.T, stream, id string, fieldValues ...string) {
	t.Helper()
	args := append([]string{stream, id}, fieldValues...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.client.Do(ctx, e.client.B().Arbitrary("XADD").Args(args...).Build()).Error(); err != nil {
		t.Fatalf("XADD %s: %v", stream, err)
	}
}

// Do runs one raw command on the Engine's connection.
func (e *scriptedEngine) Do(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.client.Do(ctx, e.client.B().Arbitrary(args[0]).Args(args[1:]...).Build()).Error(); err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
}
