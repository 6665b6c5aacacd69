package fake

import (
	"context"
	"sync"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/ports"
)

// Bus is an EngineBus the test drives by hand: it records every sent command
// on Sent and delivers only the replies the test passes to Reply. SendErr
// makes Send fail; Receiving=false makes Abandon report possible loss.
// Create it with NewBus; it is safe for concurrent use.
type Bus struct {
	// Sent receives each command as it is sent (buffered; size it with NewBus).
	Sent chan domain.Command

	mu        sync.Mutex
	waiters   map[string]chan domain.Reply
	sendErr   error
	receiving bool
	abandoned []string
}

var _ ports.EngineBus = (*Bus)(nil)

// NewBus returns a receiving bus whose Sent channel holds up to buffer commands.
func NewBus(buffer int) *Bus {
	return &Bus{Sent: make(chan domain.Command, buffer), waiters: map[string]chan domain.Reply{}, receiving: true}
}

// FailSends makes every later Send return err (nil restores sending).
func (b *Bus) FailSends(err error) {
	b.mu.Lock()
	b.sendErr = err
	b.mu.Unlock()
}

// SetReceiving sets whether the bus is receiving replies (what Abandon reports).
func (b *Bus) SetReceiving(on bool) {
	b.mu.Lock()
	b.receiving = on
	b.mu.Unlock()
}

// Send records cmd and registers its waiter, unless FailSends is in force or
// ctx has ended.
func (b *Bus) Send(ctx context.Context, cmd domain.Command) (<-chan domain.Reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if b.sendErr != nil {
		err := b.sendErr
		b.mu.Unlock()
		return nil, err
	}
	ch := make(chan domain.Reply, 1)
	b.waiters[cmd.RequestID] = ch
	b.mu.Unlock()
	b.Sent <- cmd
	return ch, nil
}

// Reply delivers r to the waiter of r.RequestID and reports whether one was
// waiting.
func (b *Bus) Reply(r domain.Reply) bool {
	b.mu.Lock()
	ch, ok := b.waiters[r.RequestID]
	delete(b.waiters, r.RequestID)
	b.mu.Unlock()
	if ok {
		ch <- r
	}
	return ok
}

// Abandon forgets the waiter of requestID and reports !receiving.
func (b *Bus) Abandon(requestID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.waiters, requestID)
	b.abandoned = append(b.abandoned, requestID)
	return !b.receiving
}

// Abandoned lists the request ids given to Abandon, in order.
func (b *Bus) Abandoned() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.abandoned...)
}
