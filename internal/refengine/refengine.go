// Package refengine is the reference Engine's logic, free of any transport:
// it answers createUser requests exactly as the trading Engine does (or, in
// legacy mode, as the old Engine did), so that the bus, the engine-sim binary
// and the tests can all run against the same behaviour.
package refengine

import (
	"context"
	"math/rand/v2"
	"sync"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
)

// Messages of replies other than the user id echo.
const (
	MessageError               = "internal error"
	MessageUnsupportedFunction = "unsupported function"
)

// UserStore remembers which users exist. Add reports whether userID was new;
// it must be atomic, so that of concurrent Adds of one id exactly one returns
// true. Implementations are safe for concurrent use.
type UserStore interface {
	Add(ctx context.Context, userID string) (added bool, err error)
}

// Option configures an Engine.
type Option func(*Engine)

// WithLegacy makes replies carry no status field, exactly like the old Engine.
func WithLegacy() Option { return func(e *Engine) { e.legacy = true } }

// WithErrorRatio makes the given fraction of requests (0 to 1) fail with
// status error, without touching the store.
func WithErrorRatio(ratio float64) Option { return func(e *Engine) { e.errorRatio = ratio } }

// Engine answers createUser requests. It is safe for concurrent use.
type Engine struct {
	store      UserStore
	legacy     bool
	errorRatio float64
}

// New returns an Engine keeping its users in store.
func New(store UserStore, opts ...Option) *Engine {
	e := &Engine{store: store}
	for _, o := range opts {
		o(e)
	}
	return e
}

// Handle answers one request: the first createUser for a user id gets its
// user id back with status ok, later ones get domain.LegacyAlreadyExists with
// status exists. A store failure, an injected error or another function gets
// status error. In legacy mode status is always omitted.
func (e *Engine) Handle(ctx context.Context, req protocol.Request) protocol.Reply {
	r := protocol.Reply{Function: req.Function, RequestID: req.RequestID}
	switch {
	case req.Function != protocol.FunctionCreateUser:
		r.Message, r.Status = MessageUnsupportedFunction, domain.StatusError
	case e.errorRatio > 0 && rand.Float64() < e.errorRatio:
		r.Message, r.Status = MessageError, domain.StatusError
	default:
		added, err := e.store.Add(ctx, req.UserID)
		switch {
		case err != nil:
			r.Message, r.Status = MessageError, domain.StatusError
		case added:
			r.Message, r.Status = req.UserID, domain.StatusOK
		default:
			r.Message, r.Status = domain.LegacyAlreadyExists, domain.StatusExists
		}
	}
	if e.legacy {
		r.Status = ""
	}
	return r
}

// HandlePayload decodes a request payload, handles it and encodes the reply,
// as a transport does. A payload without a request id cannot be answered and
// yields ok false.
func (e *Engine) HandlePayload(ctx context.Context, payload []byte) (reply []byte, ok bool) {
	req, err := protocol.DecodeRequest(payload)
	if err != nil {
		return nil, false
	}
	return protocol.EncodeReply(e.Handle(ctx, req)), true
}

// MemoryStore is a UserStore in process memory. The zero value is ready.
type MemoryStore struct {
	mu    sync.Mutex
	users map[string]struct{}
}

var _ UserStore = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// Add records userID and reports whether it was new. It never fails.
func (s *MemoryStore) Add(_ context.Context, userID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[userID]; ok {
		return false, nil
	}
	if s.users == nil {
		s.users = make(map[string]struct{})
	}
	s.users[userID] = struct{}{}
	return true, nil
}
