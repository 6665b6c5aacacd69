package e2e

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/protocol"
)

// scriptedEngine is the test's Engine: it reads the request stream and
// answers each createUser by the prefix of its user id, after a random delay
// below maxDelay so that replies come back in random order:
//
//	ok-…       status ok, message = user id
//	legacy-…   no status, message = user id (the old Engine)
//	exists-…   status exists, message "user Already Exist"
//	pending-…  status pending
//	error-…    status error
//	silent-…   no reply at all
type scriptedEngine struct {
	client   rueidis.Client
	stream   string
	maxDelay time.Duration

	mu   sync.Mutex
	seen map[string][]protocol.Request // by user id
	all  int
	got  chan struct{} // signalled on every command
}

func startScriptedEngine(t *testing.T, client rueidis.Client, stream string, maxDelay time.Duration) *scriptedEngine {
	t.Helper()
	e := &scriptedEngine{client: client, stream: stream, maxDelay: maxDelay,
		seen: map[string][]protocol.Request{}, got: make(chan struct{}, 1)}
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
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		cmd := e.client.B().Xread().Count(1000).Block(200).Streams().Key(e.stream).Id(last).Build()
		res, err := e.client.Do(ctx, cmd).AsXRead()
		if err != nil {
			if rueidis.IsRedisNil(err) {
				continue
			}
			select { // Redis is down (a fault test): try again shortly
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		for _, entry := range res[e.stream] {
			last = entry.ID
			req, err := protocol.DecodeRequest([]byte(entry.FieldValues[protocol.Field]))
			if err != nil {
				continue
			}
			e.record(req)
			reply, ok := answer(req)
			if !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if e.maxDelay > 0 {
					select {
					case <-time.After(rand.N(e.maxDelay)):
					case <-ctx.Done():
						return
					}
				}
				to := req.ReplyTo
				e.client.Do(ctx, e.client.B().Xadd().Key(to).Id("*").FieldValue().
					FieldValue(protocol.Field, string(protocol.EncodeReply(reply))).Build())
			}()
		}
	}
}

func answer(req protocol.Request) (protocol.Reply, bool) {
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
	case "silent":
		return r, false
	default:
		r.Status = "ok"
	}
	return r, true
}

func (e *scriptedEngine) record(req protocol.Request) {
	e.mu.Lock()
	e.seen[req.UserID] = append(e.seen[req.UserID], req)
	e.all++
	e.mu.Unlock()
	select {
	case e.got <- struct{}{}:
	default:
	}
}

// commands returns the commands seen for userID.
func (e *scriptedEngine) commands(userID string) []protocol.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]protocol.Request(nil), e.seen[userID]...)
}

// total is the number of commands seen.
func (e *scriptedEngine) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.all
}

// waitFor waits until the Engine has seen a command for userID.
func (e *scriptedEngine) waitFor(ctx context.Context, userID string) (protocol.Request, error) {
	for {
		if c := e.commands(userID); len(c) > 0 {
			return c[0], nil
		}
		select {
		case <-e.got:
		case <-ctx.Done():
			return protocol.Request{}, ctx.Err()
		}
	}
}
