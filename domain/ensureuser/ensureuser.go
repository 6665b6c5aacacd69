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

// Execute runs the use case. It returns domain.Confirmed or domain.Initiated,
// or an error wrapping one of the domain sentinels (ErrNoToken,
// ErrInvalidToken, ErrInvalidPayload, ErrVerifierUnavailable, ErrBusy,
// ErrBusUnavailable, ErrEngineFailed), or ctx's error when the caller went
// away; a command already sent stays sent in that case (Result.Sent).
func (u *UseCase) Execute(ctx context.Context, in Input) (Result, error) {
	var res Result
	if in.Token == "" {
		return res, domain.ErrNoToken
	}
	id, err := u.verifier.Verify(ctx, in.Token)
	if err != nil {
		return res, fmt.Errorf("verify: %w", err)
	}
	user, err := domain.NewUser(id)
	if err != nil {
		return res, err
	}
	res.UserID = user.ID

	if u.waiting.Add(1) > int64(u.cfg.MaxWaiting) {
		u.waiting.Add(-1)
		return res, domain.ErrBusy
	}
	defer u.waiting.Add(-1)

	if u.cfg.Coalesce {
		return u.coalesced(ctx, user, in.Trace)
	}
	return u.send(ctx, user, in.Trace)
}

// coalesced joins the in-flight command for user, or starts one that later
// requests for the same user can join. The command runs detached from any
// one caller, so a leader that hangs up does not fail the others; each caller
// waits only as long as its own context allows.
func (u *UseCase) coalesced(ctx context.Context, user domain.User, trace domain.Trace) (Result, error) {
	u.mu.Lock()
	f, joined := u.flights[user]
	if !joined {
		f = &flight{done: make(chan struct{})}
		u.flights[user] = f
		go func() {
			f.res, f.err = u.send(context.WithoutCancel(ctx), user, trace)
			u.mu.Lock()
			delete(u.flights, user)
			u.mu.Unlock()
			close(f.done)
		}()
	}
	u.mu.Unlock()
	select {
	case <-f.done:
		res := f.res
		res.Coalesced = joined
		return res, f.err
	case <-ctx.Done():
		return Result{UserID: user.ID, Sent: true, Coalesced: joined}, fmt.Errorf("wait for reply: %w", context.Cause(ctx))
	}
}

// send sends one command for user and waits for its reply.
func (u *UseCase) send(ctx context.Context, user domain.User, trace domain.Trace) (Result, error) {
	res := Result{UserID: user.ID}
	cmd := domain.Command{
		RequestID: domain.NewRequestID(),
		User:      user,
		SentAt:    u.clock.Now(),
		Trace:     trace,
	}
	res.RequestID = cmd.RequestID
	// The timer starts before Send so that a slow publish counts against the
	// same budget: no request waits longer than ReplyTimeout for the Engine.
	timeout := u.clock.After(u.cfg.ReplyTimeout)
	replies, err := u.bus.Send(ctx, cmd)
	if err != nil {
		res.Sent = errors.Is(err, domain.ErrEngineFailed)
		return res, fmt.Errorf("send: %w", err)
	}
	res.Sent = true

	select {
	case r := <-replies:
		res.Outcome, err = r.Interpret(user.ID)
		return res, err
	case <-timeout:
		lost := u.bus.Abandon(cmd.RequestID)
		select { // the reply may have raced the timer
		case r := <-replies:
			res.Outcome, err = r.Interpret(user.ID)
			return res, err
		default:
		}
		if lost {
			return res, fmt.Errorf("no reply while the bus was not receiving: %w", domain.ErrEngineFailed)
		}
		res.Outcome = domain.Initiated
		return res, nil
	case <-ctx.Done():
		u.bus.Abandon(cmd.RequestID)
		return res, fmt.Errorf("wait for reply: %w", context.Cause(ctx))
	}
}
