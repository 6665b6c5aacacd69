// Package membus is an in-memory Engine bus with an in-process Engine (the
// reference Engine of package refengine, users kept in memory), selected by
// ENGINE_TRANSPORT=memory for local runs and tests. It goes through the same
// wire format and the same correlation as the Redis bus, so it behaves alike:
// each reply reaches only its request, Abandon makes a later reply late, and
// the metrics have the same names.
package membus

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/internal/correlate"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/internal/refengine"
	"github.com/ensure-user/ensure-user/ports"
)

// Config is the in-memory bus's configuration.
type Config struct {
	// ReplyTo is the reply stream named in each command's replyTo, as the
	// Redis bus would name it (nothing reads it in memory).
	ReplyTo string
}

// Options tune the in-process Engine. The zero value is New's default.
type Options struct {
	// ReplyDelay makes the Engine answer each command after this long, for
	// tests of slow Engines and timeouts.
	ReplyDelay time.Duration
	// Engine replaces the default Engine (refengine with a memory store), for
	// example with a legacy or failing one.
	Engine *refengine.Engine
	// Handle, when set, replaces the Engine altogether: it turns a command
	// payload into its reply payload (ok false: no reply). Benchmarks use it
	// for an Engine that costs next to nothing, so that they measure the
	// service's side of the bus alone.
	Handle func(ctx context.Context, payload []byte) (reply []byte, ok bool)
}

// Bus is the in-memory Engine bus. It is safe for concurrent use.
type Bus struct {
	replyTo string
	log     *zap.Logger
	handle  func(ctx context.Context, payload []byte) ([]byte, bool)
	delay   time.Duration
	table   *correlate.Table
	metrics *correlate.Metrics

	// publish hands a command payload to the Engine side; it is called with
	// mu read-locked and must not block.
	publish func(payload []byte)

	ctx    context.Context // ends at cleanup: pending answers are dropped
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup // Engine goroutines
}

var _ ports.EngineBus = (*Bus)(nil)

// New returns a bus whose Engine (refengine with a memory store) answers
// every command at once, in a goroutine of its own, and a cleanup that stops
// the bus and waits for those goroutines; after it, Send fails with
// domain.ErrBusUnavailable. Metrics are registered on reg (nil: none) under
// the names of correlate.NewMetrics.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Bus, func(), error) {
	return NewWithOptions(cfg, log, reg, Options{})
}

// NewWithOptions is New with a tuned Engine.
func NewWithOptions(cfg Config, log *zap.Logger, reg prometheus.Registerer, opts Options) (*Bus, func(), error) {
	b, cleanup, err := newBus(cfg, log, reg, opts)
	if err != nil {
		return nil, nil, err
	}
	b.publish = b.answer
	return b, cleanup, nil
}

func newBus(cfg Config, log *zap.Logger, reg prometheus.Registerer, opts Options) (*Bus, func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{
		replyTo: cfg.ReplyTo,
		log:     log.Named("membus"),
		handle:  opts.Handle,
		delay:   opts.ReplyDelay,
		table:   correlate.NewTable(0),
		ctx:     ctx,
	}
	if b.handle == nil {
		engine := opts.Engine
		if engine == nil {
			engine = refengine.New(refengine.NewMemoryStore())
		}
		b.handle = engine.HandlePayload
	}
	var err error
	if b.metrics, err = correlate.NewMetrics(reg, b.Waiting, b.open); err != nil {
		cancel()
		return nil, nil, err
	}
	var once sync.Once
	return b, func() {
		once.Do(func() {
			b.mu.Lock()
			b.closed = true
			b.mu.Unlock()
			cancel()
			b.wg.Wait()
		})
	}, nil
}

// Send registers interest in cmd.RequestID and hands the command, encoded as
// on the wire, to the Engine. It fails with ctx's error when ctx has ended,
// and with domain.ErrBusUnavailable after cleanup or for a request id that is
// already waiting; nothing is sent then.
func (b *Bus) Send(ctx context.Context, cmd domain.Command) (<-chan domain.Reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // the caller's own context error: nothing to add
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		b.metrics.NotSent()
		return nil, fmt.Errorf("bus stopped: %w", domain.ErrBusUnavailable)
	}
	replies, err := b.table.Register(cmd.RequestID)
	if err != nil {
		b.metrics.NotSent()
		return nil, fmt.Errorf("register the reply's waiter: %w: %v", domain.ErrBusUnavailable, err)
	}
	b.publish(protocol.EncodeCommand(cmd, b.replyTo))
	b.metrics.Sent()
	return replies, nil
}

// Abandon stops waiting for the reply to requestID; a later reply counts as
// late. Replies are never lost in memory, so it reports true only once the
// bus is stopped.
func (b *Bus) Abandon(requestID string) bool {
	b.table.Abandon(requestID)
	return !b.open()
}

// Waiting reports how many requests are waiting for a reply.
func (b *Bus) Waiting() int { return b.table.Len() }

// Ready returns nil until cleanup, then an error wrapping
// domain.ErrBusUnavailable.
func (b *Bus) Ready(context.Context) error {
	if !b.open() {
		return fmt.Errorf("bus stopped: %w", domain.ErrBusUnavailable)
	}
	return nil
}

func (b *Bus) open() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return !b.closed
}

// answer is the default publish: the Engine answers in a goroutine of its
// own, after the reply delay.
func (b *Bus) answer(payload []byte) {
	b.wg.Add(1) // under mu's read lock, so never after cleanup's Wait began
	go func() {
		defer b.wg.Done()
		if b.delay > 0 {
			t := time.NewTimer(b.delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-b.ctx.Done():
				return
			}
		}
		if reply, ok := b.handle(b.ctx, payload); ok {
			b.receive(reply)
		}
	}()
}

// receive is the reply side: it decodes one reply payload and hands it to its
// waiter, or counts why it cannot.
func (b *Bus) receive(payload []byte) {
	r, err := protocol.DecodeReply(payload)
	if err != nil {
		b.metrics.Reply(correlate.Malformed, 0)
		b.log.Warn("malformed reply skipped", zap.Error(err))
		return
	}
	res, _ := b.table.Deliver(r, b.metrics.Reply)
	if res != correlate.Delivered {
		b.log.Debug("reply not delivered", zap.String("request_id", r.RequestID), zap.Stringer("result", res))
	}
}
