package contract

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/ports"
)

// EngineSide plays the Engine in the EngineBus contract: it sees what the bus
// publishes and answers through the bus's reply path.
type EngineSide interface {
	// Next returns the payload of the next command the bus published, in
	// publish order, waiting for it until ctx ends.
	Next(ctx context.Context) ([]byte, error)
	// Reply publishes payload as one reply entry (normally the JSON of a
	// protocol.Reply, but junk too) where the bus reads replies.
	Reply(ctx context.Context, payload []byte) error
}

// EngineBusHarness builds the EngineBus implementations under test.
type EngineBusHarness struct {
	// New returns a fresh bus, ready to send, and the Engine side it talks
	// to; both are cleaned up with t.
	New func(t *testing.T) (ports.EngineBus, EngineSide)
	// Unreachable returns a bus whose server cannot be reached. When nil,
	// that case is skipped with SkipUnreachable as the reason.
	Unreachable     func(t *testing.T) ports.EngineBus
	SkipUnreachable string
	// Stalling returns a fresh bus, its Engine side, and a way to hold its
	// transport: while held, a publish is written but not answered, until
	// release; the bus's own send bound must be well under a second. When
	// nil (an in-memory bus cannot stall), that case is skipped with
	// SkipStalling as the reason.
	Stalling     func(t *testing.T) (bus ports.EngineBus, engine EngineSide, hold, release func())
	SkipStalling string
}

// unreachableBound is a sanity bound, not a performance target: a bus that
// cannot reach its server must say so well under a second.
const unreachableBound = time.Second

// RunEngineBus is the EngineBus contract: every bus (Redis Streams, memory)
// must pass it.
func RunEngineBus(t *testing.T, h EngineBusHarness) {
	t.Helper()

	t.Run("publish then read back", func(t *testing.T) {
		bus, engine := h.New(t)
		cmd := newEngineCommand(`quo"te\back-ünï-🙂`)
		cmd.User.Email = `"we\"ird"@example.com`
		cmd.Trace = domain.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "v=1"}
		replies := busSend(t, bus, cmd)

		payload := busNext(t, engine)
		req, err := protocol.DecodeRequest(payload)
		if err != nil {
			t.Fatalf("published payload %s: %v", payload, err)
		}
		if req.RequestID != cmd.RequestID || req.UserID != cmd.User.ID || req.UserEmail != cmd.User.Email ||
			req.Function != protocol.FunctionCreateUser || req.TraceParent != cmd.Trace.Parent || req.TraceState != cmd.Trace.State {
			t.Errorf("published %+v, want the fields of %+v", req, cmd)
		}
		if req.ReplyTo == "" {
			t.Error("published command has no replyTo")
		}
		if sentAt, err := time.Parse(time.RFC3339Nano, req.SentAt); err != nil || !sentAt.Equal(cmd.SentAt) {
			t.Errorf("sentAt %q, want %s", req.SentAt, cmd.SentAt.Format(time.RFC3339Nano))
		}
		if want := protocol.EncodeCommand(cmd, req.ReplyTo); !bytes.Equal(payload, want) {
			t.Errorf("published payload\n %s\nwant exactly\n %s", payload, want)
		}

		busReply(t, engine, protocol.Reply{Function: "createUser", RequestID: cmd.RequestID, Message: cmd.User.ID, Status: "ok"})
		want := domain.Reply{RequestID: cmd.RequestID, Message: cmd.User.ID, Status: "ok"}
		if got := busReceive(t, replies); got != want {
			t.Errorf("received %+v, want %+v", got, want)
		}
	})

	t.Run("trace fields are omitted when empty", func(t *testing.T) {
		bus, engine := h.New(t)
		busSend(t, bus, newEngineCommand("user-1"))
		var fields map[string]any
		if err := json.Unmarshal(busNext(t, engine), &fields); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"traceparent", "tracestate"} {
			if _, ok := fields[k]; ok {
				t.Errorf("field %s present without a trace", k)
			}
		}
	})

	t.Run("legacy reply without status", func(t *testing.T) {
		bus, engine := h.New(t)
		cmd := newEngineCommand("user-1")
		replies := busSend(t, bus, cmd)
		busNext(t, engine)
		busReply(t, engine, protocol.Reply{Function: "createUser", RequestID: cmd.RequestID, Message: domain.LegacyAlreadyExists})
		want := domain.Reply{RequestID: cmd.RequestID, Message: domain.LegacyAlreadyExists}
		if got := busReceive(t, replies); got != want {
			t.Errorf("received %+v, want %+v", got, want)
		}
	})

	t.Run("concurrent requests each get their own reply", func(t *testing.T) {
		bus, engine := h.New(t)
		const n = 250
		ctx := engineContext(t)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				cmd := newEngineCommand(fmt.Sprintf("user-%d", i))
				replies, err := bus.Send(ctx, cmd)
				if err != nil {
					t.Errorf("Send %d: %v", i, err)
					return
				}
				select {
				case r := <-replies:
					if r.RequestID != cmd.RequestID || r.Message != cmd.User.ID {
						t.Errorf("request %s for %s received %+v", cmd.RequestID, cmd.User.ID, r)
					}
				case <-ctx.Done():
					t.Errorf("request %d: no reply", i)
				}
			})
		}
		reqs := make([]protocol.Request, 0, n)
		for range n {
			req, err := protocol.DecodeRequest(busNext(t, engine))
			if err != nil {
				t.Fatal(err)
			}
			reqs = append(reqs, req)
		}
		rand.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
		for _, req := range reqs {
			busReply(t, engine, protocol.Reply{Function: req.Function, RequestID: req.RequestID, Message: req.UserID, Status: "ok"})
		}
		wg.Wait()
	})

	t.Run("abandoned request gets no late reply", func(t *testing.T) {
		bus, engine := h.New(t)
		cmd := newEngineCommand("user-1")
		replies := busSend(t, bus, cmd)
		busNext(t, engine)
		if lost := bus.Abandon(cmd.RequestID); lost {
			t.Error("Abandon on a healthy bus reports replies may be lost")
		}
		busReply(t, engine, protocol.Reply{Function: "createUser", RequestID: cmd.RequestID, Message: "user-1", Status: "ok"})
		busRoundTrip(t, bus, engine) // the late reply has been handled once this one arrived
		busExpectNothing(t, replies)
		bus.Abandon(cmd.RequestID) // twice is harmless
		bus.Abandon("never-sent")
	})

	t.Run("duplicate, unknown and junk replies reach nobody", func(t *testing.T) {
		bus, engine := h.New(t)
		cmd := newEngineCommand("user-1")
		replies := busSend(t, bus, cmd)
		busNext(t, engine)
		r := protocol.Reply{Function: "createUser", RequestID: cmd.RequestID, Message: "first", Status: "ok"}
		busReply(t, engine, r)
		r.Message = "duplicate"
		busReply(t, engine, r)
		busReply(t, engine, protocol.Reply{Function: "createUser", RequestID: domain.NewRequestID(), Message: "stranger"})
		for _, junk := range []string{`not json`, `{"message":"no id"}`, `{"requestId":7}`, ``} {
			if err := engine.Reply(engineContext(t), []byte(junk)); err != nil {
				t.Fatal(err)
			}
		}
		busRoundTrip(t, bus, engine)
		if got := busReceive(t, replies); got.Message != "first" {
			t.Errorf("received %+v, want the first reply", got)
		}
		busExpectNothing(t, replies)
	})

	t.Run("cancelled context: context error and nothing sent", func(t *testing.T) {
		bus, engine := h.New(t)
		ctx, cancel := context.WithCancel(engineContext(t))
		cancel()
		cmd := newEngineCommand("user-1")
		if _, err := bus.Send(ctx, cmd); !errors.Is(err, context.Canceled) {
			t.Fatalf("Send with a cancelled context = %v, want context.Canceled", err)
		}
		marker := newEngineCommand("user-2")
		busSend(t, bus, marker)
		req, err := protocol.DecodeRequest(busNext(t, engine))
		if err != nil {
			t.Fatal(err)
		}
		if req.RequestID != marker.RequestID {
			t.Errorf("first published command is %s, want the marker %s: the cancelled one was sent", req.RequestID, marker.RequestID)
		}
	})

	t.Run("publish outcome unknown: ErrSendUnknown, and the command may arrive", func(t *testing.T) {
		if h.Stalling == nil {
			t.Skip(h.SkipStalling)
		}
		bus, engine, hold, release := h.Stalling(t)
		cmd := newEngineCommand("user-1")
		hold()
		_, err := bus.Send(engineContext(t), cmd)
		release()
		if !errors.Is(err, domain.ErrSendUnknown) || errors.Is(err, domain.ErrBusUnavailable) {
			t.Fatalf("Send while the transport held it = %v, want ErrSendUnknown (sent or not, unknown)", err)
		}
		req, err := protocol.DecodeRequest(busNext(t, engine))
		if err != nil || req.RequestID != cmd.RequestID {
			t.Fatalf("after the release the Engine got %+v, %v; want the command whose outcome was unknown", req, err)
		}
	})

	t.Run("unreachable server: ErrBusUnavailable fast", func(t *testing.T) {
		if h.Unreachable == nil {
			t.Skip(h.SkipUnreachable)
		}
		bus := h.Unreachable(t)
		start := time.Now()
		_, err := bus.Send(engineContext(t), newEngineCommand("user-1"))
		if elapsed := time.Since(start); elapsed > unreachableBound {
			t.Errorf("Send took %s, want under %s", elapsed, unreachableBound)
		}
		if !errors.Is(err, domain.ErrBusUnavailable) {
			t.Errorf("Send = %v, want ErrBusUnavailable", err)
		}
	})
}

func busSend(t *testing.T, bus ports.EngineBus, cmd domain.Command) <-chan domain.Reply {
	t.Helper()
	replies, err := bus.Send(engineContext(t), cmd)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return replies
}

func busNext(t *testing.T, engine EngineSide) []byte {
	t.Helper()
	payload, err := engine.Next(engineContext(t))
	if err != nil {
		t.Fatalf("the Engine side received no command: %v", err)
	}
	return payload
}

func busReply(t *testing.T, engine EngineSide, r protocol.Reply) {
	t.Helper()
	if err := engine.Reply(engineContext(t), protocol.EncodeReply(r)); err != nil {
		t.Fatalf("Reply: %v", err)
	}
}

func busReceive(t *testing.T, replies <-chan domain.Reply) domain.Reply {
	t.Helper()
	select {
	case r := <-replies:
		return r
	case <-engineContext(t).Done():
		t.Fatal("no reply")
		return domain.Reply{}
	}
}

// roundTrip sends a marker command and waits for its reply. Replies are
// handled in order, so every reply published before the marker's has been
// handled when it arrives: no need to sleep to prove that nothing came.
func busRoundTrip(t *testing.T, bus ports.EngineBus, engine EngineSide) {
	t.Helper()
	marker := newEngineCommand("marker")
	replies := busSend(t, bus, marker)
	for {
		req, err := protocol.DecodeRequest(busNext(t, engine))
		if err != nil {
			t.Fatal(err)
		}
		if req.RequestID == marker.RequestID {
			break
		}
	}
	busReply(t, engine, protocol.Reply{Function: "createUser", RequestID: marker.RequestID, Message: "marker", Status: "ok"})
	if got := busReceive(t, replies); got.RequestID != marker.RequestID {
		t.Fatalf("marker received %+v", got)
	}
}

func busExpectNothing(t *testing.T, replies <-chan domain.Reply) {
	t.Helper()
	select {
	case r := <-replies:
		t.Errorf("received %+v, want nothing", r)
	default:
	}
}
