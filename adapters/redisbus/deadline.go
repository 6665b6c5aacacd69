package redisbus

import (
	"context"
	"sync/atomic"
	"time"
)

// deadlines hands out contexts that end about d after they are asked for,
// shared by every caller of the same few milliseconds (slack): bounding each
// XADD then costs no timer or context of its own - one per slack instead. A
// caller gets more than d-slack and at most d: never more than configured.
type deadlines struct {
	d, slack time.Duration
	cur      atomic.Pointer[sharedDeadline]
}

type sharedDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc // the context ends by its deadline; kept for vet
	made   time.Time
}

func newDeadlines(d, slack time.Duration) *deadlines {
	return &deadlines{d: d, slack: slack}
}

// at returns a context whose deadline is more than d-slack and at most d
// after now.
func (s *deadlines) at(now time.Time) context.Context {
	if c := s.cur.Load(); c != nil && now.Sub(c.made) < s.slack && !now.Before(c.made) {
		return c.ctx
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(s.d))
	s.cur.Store(&sharedDeadline{ctx: ctx, cancel: cancel, made: now})
	return ctx
}
