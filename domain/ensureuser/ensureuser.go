// Package ensureuser is the EnsureUser use case: verify the bearer token, build
// the createUser command, always send it to the Engine, and wait a bounded time
// for the Engine's reply to that very command. It depends only on ports.
package ensureuser

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/ports"
)

// Defaults for Config fields left zero.
const (
	DefaultReplyTimeout = 5 * time.Second
	DefaultMaxWaiting   = 20000
)

// Config tunes the use case.
type Config struct {
	// ReplyTimeout bounds the wait for the Engine's reply.
	ReplyTimeout time.Duration
	// MaxWaiting caps the requests waiting for a reply at once; beyond it a
	// request is refused with domain.ErrBusy before anything is sent.
	MaxWaiting int
	// Coalesce lets concurrent requests for the same user (id and email)
	// share one in-flight command and its answer, instead of each sending
	// its own. Off by default: the contract says every call sends.
	Coalesce bool
}

// Input is one ensure-user request as the use case sees it.
type Input struct {
	// Token is the bearer token; empty means none was provided.
	Token string
	// Trace is forwarded to the Engine with the command.
	Trace domain.Trace
}

// Result tells what happened; its fields are filled as far as the request got,
// so that a decorator can log them even when Execute returns an error.
type Result struct {
	Outcome   domain.Outcome // zero when Execute returned an error
	UserID    string         // set once the token verified and the claims validated
	RequestID string         // set once a command was built
	Sent      bool           // the command went to the bus (or may have)
	TimedOut  bool           // the reply timeout ran out before a reply came
	Coalesced bool           // the request shared another request's command
}

// UseCase is the EnsureUser use case. It is safe for concurrent use.
type UseCase struct {
	verifier ports.TokenVerifier
	bus      ports.EngineBus
	clock    ports.Clock
	cfg      Config
	waiting  atomic.Int64

	mu      sync.Mutex
	flights map[domain.User]*flight // in-flight commands, when coalescing
}

// flight is one command shared by the requests that coalesced onto it.
type flight struct {
	done chan struct{} // closed when res and err are set
	res  Result
	err  error
}

// New returns the use case. Zero Config fields take their defaults.
func New(cfg Config, verifier ports.TokenVerifier, bus ports.EngineBus, clock ports.Clock) *UseCase {
	if cfg.ReplyTimeout <= 0 {
		cfg.ReplyTimeout = DefaultReplyTimeout
	}
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = DefaultMaxWaiting
	}
	return &UseCase{verifier: verifier, bus: bus, clock: clock, cfg: cfg, flights: map[domain.User]*flight{}}
}

// Waiting reports how many requests are waiting for an Engine reply now.
func (u *UseCase) Waiting() int { return int(u.waiting.Load()) }

// Pending is a request between Start and Wait: its command is sent, or
// about to be answered by a coalesced one, and its reply is awaited. Result
// says how far the request got. A Pending is a value so that holding one
// costs no allocation; Wait must be called exactly once for each Pending
// that Start returned without an error.
type Pending struct {
	Result
	u       *UseCase
	replies <-chan domain.Reply // the bus's channel for this command
	timeout <-chan time.Time    // fires ReplyTimeout after Start began the send
	flight  *flight             // set when coalescing: the shared command
}

// Execute runs the use case: Start, then Wait. It returns domain.Confirmed
// or domain.Initiated, or an error wrapping the sentinel of one of the
// error outcomes of domain.Outcomes (ErrNoToken, ErrInvalidToken,
// ErrInvalidPayload, ErrVerifierUnavailable, ErrBusy, ErrBusUnavailable,
// ErrSendUnknown, ErrEngineFailed, ErrReplyLost), or ctx's error when the
// caller went away; a command already sent stays sent in that case
// (Result.Sent).
func (u *UseCase) Execute(ctx context.Context, in Input) (Result, error) {
	p, err := u.Start(ctx, in)
	if err != nil {
		return p.Result, err
	}
	return u.Wait(ctx, &p)
}

// Start runs a request up to the Engine's reply: it verifies the token,
// validates the identity, takes a waiting slot and sends the command (or,
// when coalescing, joins the command in flight for the same user). All of
// it runs on the caller's goroutine, the signature check included, so that
// a caller can then wait for the reply on a goroutine of its own whose stack
// never held that check (see Wait). On error the Pending's Result says how
// far the request got, and there is nothing to wait for.
func (u *UseCase) Start(ctx context.Context, in Input) (Pending, error) {
	p := Pending{u: u}
	if in.Token == "" {
		return p, domain.ErrNoToken
	}
	id, err := u.verifier.Verify(ctx, in.Token)
	if err != nil {
		return p, fmt.Errorf("verify: %w", err)
	}
	user, err := domain.NewUser(id)
	if err != nil {
		return p, err
	}
	p.UserID = user.ID
	if u.waiting.Add(1) > int64(u.cfg.MaxWaiting) {
		u.waiting.Add(-1)
		return p, domain.ErrBusy
	}
	if u.cfg.Coalesce {
		p.flight, p.Coalesced = u.join(ctx, user, in.Trace)
		p.Sent = true
		return p, nil
	}
	p.RequestID = domain.NewRequestID()
	// The timer starts before the send so that a slow publish counts against
	// the same budget: no request waits longer than ReplyTimeout for the
	// Engine.
	p.timeout = u.clock.After(u.cfg.ReplyTimeout)
	p.replies, p.Sent, err = u.send(ctx, p.RequestID, user, in.Trace)
	if err != nil {
		u.waiting.Add(-1)
		return p, err
	}
	return p, nil
}

// Wait waits for the reply to p's command, for the reply timeout, or for ctx
// to end, whichever comes first, and returns the request's outcome as
// Execute does. It holds nothing but p while it waits.
func (u *UseCase) Wait(ctx context.Context, p *Pending) (Result, error) {
	// No defer: a waiting request's goroutine holds this frame, and with
	// many parked waits every byte of it counts (see echohttp's parking).
	var (
		res Result
		err error
	)
	if p.flight != nil {
		res, err = p.waitFlight(ctx)
	} else {
		res, err = p.wait(ctx)
	}
	u.waiting.Add(-1)
	return res, err
}

// join joins the in-flight command for user, or starts one that later
// requests for the same user can join, and reports whether it joined. The
// command runs detached from any one caller, so a leader that hangs up does
// not fail the others; each caller waits only as long as its own context
// allows.
func (u *UseCase) join(ctx context.Context, user domain.User, trace domain.Trace) (*flight, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if f, ok := u.flights[user]; ok {
		return f, true
	}
	f := &flight{done: make(chan struct{})}
	u.flights[user] = f
	go func() {
		lead := Pending{u: u, Result: Result{UserID: user.ID}}
		lead.RequestID = domain.NewRequestID()
		lead.timeout = u.clock.After(u.cfg.ReplyTimeout)
		var err error
		lead.replies, lead.Sent, err = u.send(context.WithoutCancel(ctx), lead.RequestID, user, trace)
		if err == nil {
			f.res, f.err = lead.wait(context.Background())
		} else {
			f.res, f.err = lead.Result, err
		}
		u.mu.Lock()
		delete(u.flights, user)
		u.mu.Unlock()
		close(f.done)
	}()
	return f, false
}

// waitFlight waits for the shared command's answer.
func (p *Pending) waitFlight(ctx context.Context) (Result, error) {
	select {
	case <-p.flight.done:
		res := p.flight.res
		res.Coalesced = p.Coalesced
		return res, p.flight.err
	case <-ctx.Done():
		return p.Result, fmt.Errorf("wait for reply: %w", context.Cause(ctx))
	}
}

// send sends one command for user. It reports whether the command went out
// (or may have), with the bus's error when the send failed.
func (u *UseCase) send(ctx context.Context, requestID string, user domain.User, trace domain.Trace) (<-chan domain.Reply, bool, error) {
	replies, err := u.bus.Send(ctx, domain.Command{
		RequestID: requestID,
		User:      user,
		SentAt:    u.clock.Now(),
		Trace:     trace,
	})
	if err != nil {
		return nil, errors.Is(err, domain.ErrSendUnknown), fmt.Errorf("send: %w", err)
	}
	return replies, true, nil
}

// wait waits for the reply to p's own command. It only selects: what
// follows each case is a function of its own, so that the frame a waiting
// goroutine holds stays small (see echohttp's parking).
func (p *Pending) wait(ctx context.Context) (Result, error) {
	select {
	case r := <-p.replies:
		return p.replied(r)
	case <-p.timeout:
		return p.timedOut()
	case <-ctx.Done():
		return p.abandoned(ctx)
	}
}

// replied is the outcome of the reply r.
//
//go:noinline
func (p *Pending) replied(r domain.Reply) (Result, error) {
	res := p.Result
	var err error
	res.Outcome, err = r.Interpret(p.UserID)
	return res, err
}

// timedOut is the outcome of a wait whose reply timeout ran out: the reply
// may have raced the timer; else the command stays initiated, or its reply
// may have been lost while the bus was not receiving.
//
//go:noinline
func (p *Pending) timedOut() (Result, error) {
	lost := p.u.bus.Abandon(p.RequestID)
	select {
	case r := <-p.replies:
		return p.replied(r)
	default:
	}
	res := p.Result
	res.TimedOut = true
	if lost {
		return res, fmt.Errorf("wait for reply: %w", domain.ErrReplyLost)
	}
	res.Outcome = domain.Initiated
	return res, nil
}

// abandoned is the outcome of a wait whose caller went away.
//
//go:noinline
func (p *Pending) abandoned(ctx context.Context) (Result, error) {
	p.u.bus.Abandon(p.RequestID)
	return p.Result, fmt.Errorf("wait for reply: %w", context.Cause(ctx))
}
