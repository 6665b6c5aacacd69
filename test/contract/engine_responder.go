package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/internal/refengine"
)

// EngineMode is the behaviour an Engine under test is started with.
type EngineMode int

// Engine modes.
const (
	// EngineDefault answers with status ok, exists or error.
	EngineDefault EngineMode = iota
	// EngineLegacy answers like the old Engine: never a status field.
	EngineLegacy
	// EngineFailing answers every createUser with status error.
	EngineFailing
)

// EngineResponder is one Engine under test, reached through its transport.
// Call delivers one request payload (the JSON of a protocol.Request) and
// returns the payload of the Engine's reply to it.
type EngineResponder interface {
	Call(ctx context.Context, request []byte) (reply []byte, err error)
}

// NewEngineResponder starts an Engine in mode with an empty user store, for
// one test, and returns a way to call it.
type NewEngineResponder func(t *testing.T, mode EngineMode) EngineResponder

// RunEngineResponder is the contract of the Engine side of the protocol:
// every Engine implementation (the in-memory reference Engine, the Redis
// engine-sim) must pass it, so they cannot drift from each other or from
// the rules domain.Reply.Interpret applies.
func RunEngineResponder(t *testing.T, newEngine NewEngineResponder) {
	t.Helper()

	t.Run("first createUser is ok with the user id", func(t *testing.T) {
		e := newEngine(t, EngineDefault)
		r := engineCall(t, e, newEngineCommand("user-1"))
		r.expect(t, "user-1", domain.StatusOK)
		r.confirms(t, "user-1")
		if r.fields["function"] != protocol.FunctionCreateUser {
			t.Errorf("reply function %v, want %s", r.fields["function"], protocol.FunctionCreateUser)
		}
	})

	t.Run("later createUser says the user exists", func(t *testing.T) {
		e := newEngine(t, EngineDefault)
		engineCall(t, e, newEngineCommand("user-1")).expect(t, "user-1", domain.StatusOK)
		for range 2 {
			r := engineCall(t, e, newEngineCommand("user-1"))
			r.expect(t, domain.LegacyAlreadyExists, domain.StatusExists)
			r.confirms(t, "user-1")
		}
	})

	t.Run("users are independent", func(t *testing.T) {
		e := newEngine(t, EngineDefault)
		engineCall(t, e, newEngineCommand("user-1")).expect(t, "user-1", domain.StatusOK)
		engineCall(t, e, newEngineCommand("user-2")).expect(t, "user-2", domain.StatusOK)
	})

	t.Run("awkward user ids come back byte for byte", func(t *testing.T) {
		e := newEngine(t, EngineDefault)
		for _, id := range []string{`quo"te`, `back\slash`, "ünï-日本-🙂", "<&>", `{"a":1}`} {
			engineCall(t, e, newEngineCommand(id)).expect(t, id, domain.StatusOK)
		}
	})

	t.Run("concurrent first createUser: exactly one ok", func(t *testing.T) {
		e := newEngine(t, EngineDefault)
		const n = 20
		replies := make(chan engineReply, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { replies <- engineCall(t, e, newEngineCommand("same-user")) })
		}
		wg.Wait()
		close(replies)
		ok := 0
		for r := range replies {
			switch r.Status {
			case domain.StatusOK:
				ok++
			case domain.StatusExists:
			default:
				t.Errorf("status %q, want ok or exists", r.Status)
			}
		}
		if ok != 1 {
			t.Errorf("%d replies were ok, want exactly 1", ok)
		}
	})

	t.Run("unknown fields in the request are ignored", func(t *testing.T) {
		e := newEngine(t, EngineDefault)
		cmd := newEngineCommand("user-1")
		cmd.Trace = domain.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "a=b"}
		raw := protocol.EncodeCommand(cmd, "replies")
		raw = append(raw[:len(raw)-1], `,"future":{"x":[1]}}`...)
		reply, err := e.Call(engineContext(t), raw)
		if err != nil {
			t.Fatal(err)
		}
		engineParse(t, reply, cmd.RequestID).expect(t, "user-1", domain.StatusOK)
	})

	t.Run("unsupported function is an error and creates nobody", func(t *testing.T) {
		e := newEngine(t, EngineDefault)
		cmd := newEngineCommand("user-1")
		req := protocol.NewRequest(cmd, "replies")
		req.Function = "deleteUser"
		raw, _ := json.Marshal(req)
		reply, err := e.Call(engineContext(t), raw)
		if err != nil {
			t.Fatal(err)
		}
		r := engineParse(t, reply, cmd.RequestID)
		if r.Status != domain.StatusError {
			t.Errorf("status %q, want error", r.Status)
		}
		engineCall(t, e, newEngineCommand("user-1")).expect(t, "user-1", domain.StatusOK)
	})

	t.Run("legacy mode never sends a status", func(t *testing.T) {
		e := newEngine(t, EngineLegacy)
		first := engineCall(t, e, newEngineCommand("user-1"))
		first.expect(t, "user-1", "")
		first.confirms(t, "user-1")
		again := engineCall(t, e, newEngineCommand("user-1"))
		again.expect(t, domain.LegacyAlreadyExists, "")
		again.confirms(t, "user-1")
		for _, r := range []engineReply{first, again} {
			if _, ok := r.fields["status"]; ok {
				t.Errorf("legacy reply has a status field: %s", r.raw)
			}
		}
	})

	t.Run("failing mode answers status error", func(t *testing.T) {
		e := newEngine(t, EngineFailing)
		r := engineCall(t, e, newEngineCommand("user-1"))
		if r.Status != domain.StatusError {
			t.Fatalf("status %q, want error", r.Status)
		}
		if _, err := r.Reply.Interpret("user-1"); err == nil {
			t.Error("an error reply must interpret as ErrEngineFailed")
		}
	})
}

// engineReply is a decoded reply plus its raw fields.
type engineReply struct {
	domain.Reply
	raw    []byte
	fields map[string]any
}

func (r engineReply) expect(t *testing.T, message, status string) {
	t.Helper()
	if r.Message != message || r.Status != status {
		t.Errorf("reply message %q status %q, want %q %q (%s)", r.Message, r.Status, message, status, r.raw)
	}
}

func (r engineReply) confirms(t *testing.T, userID string) {
	t.Helper()
	if o, err := r.Reply.Interpret(userID); err != nil || o != domain.Confirmed {
		t.Errorf("reply %s interprets as %v, %v; want confirmed", r.raw, o, err)
	}
}

func engineCall(t *testing.T, e EngineResponder, cmd domain.Command) engineReply {
	t.Helper()
	reply, err := e.Call(engineContext(t), protocol.EncodeCommand(cmd, "replies"))
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	return engineParse(t, reply, cmd.RequestID)
}

func engineParse(t *testing.T, raw []byte, requestID string) engineReply {
	t.Helper()
	r, err := protocol.DecodeReply(raw)
	if err != nil {
		t.Fatalf("DecodeReply(%s): %v", raw, err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatalf("reply is not a JSON object: %v", err)
	}
	if r.RequestID != requestID {
		t.Errorf("reply requestId %q, want %q", r.RequestID, requestID)
	}
	return engineReply{Reply: r, raw: raw, fields: fields}
}

func newEngineCommand(userID string) domain.Command {
	return domain.Command{
		RequestID: domain.NewRequestID(),
		User:      domain.User{ID: userID, Email: fmt.Sprintf("u%d@example.com", len(userID))},
		SentAt:    time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
	}
}

// testContext bounds one contract step; no step needs anywhere near this.
func engineContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ReferenceEngine is the reference Engine (internal/refengine) on store, in
// mode, called in process through HandlePayload: the decode and encode steps
// a transport goes through, without the transport.
func ReferenceEngine(store refengine.UserStore, mode EngineMode) EngineResponder {
	var opts []refengine.Option
	switch mode {
	case EngineLegacy:
		opts = append(opts, refengine.WithLegacy())
	case EngineFailing:
		opts = append(opts, refengine.WithErrorRatio(1))
	}
	return refResponder{refengine.New(store, opts...)}
}

type refResponder struct{ e *refengine.Engine }

func (r refResponder) Call(ctx context.Context, request []byte) ([]byte, error) {
	reply, ok := r.e.HandlePayload(ctx, request)
	if !ok {
		return nil, errors.New("request cannot be answered")
	}
	return reply, nil
}
