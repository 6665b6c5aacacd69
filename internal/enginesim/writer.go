package enginesim

import (
	"container/heap"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/internal/protocol"
)

// Bounds of the writes.
const (
	maxWrite       = 1024 // replies per write round trip
	writesInFlight = 4    // write round trips at once
)

// writeLoop writes the replies received on in as they fall due, each write
// one round trip for up to maxWrite replies and their XACK, up to
// writesInFlight writes at once. Delayed replies
// wait in a queue, each on its own time, so a delay never holds up another
// reply; at most MaxInFlight wait before writeLoop stops receiving, which
// pauses the reader. Once ctx ends it waits no more: what is queued, and
// what the reader still hands over, is written at once, so that shutdown is
// prompt and leaves nothing that was read unanswered. It returns when in is
// closed and everything is written.
func (s *Sim) writeLoop(ctx context.Context, in <-chan []outgoing) {
	var q queue
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// Writes run in the background, a few at a time, so that one round trip
	// holds up neither the next due replies nor the reader.
	var writes sync.WaitGroup
	defer writes.Wait()
	slots := make(chan struct{}, writesInFlight)
	write := func(due []outgoing) {
		slots <- struct{}{}
		writes.Go(func() {
			defer func() { <-slots }()
			s.write(ctx, due)
		})
	}
	stopping := ctx.Done() // nil once ctx ended
	for {
		if due := q.pop(time.Now(), stopping == nil, maxWrite); len(due) > 0 {
			write(due)
			continue
		}
		recv, wake := in, (<-chan time.Time)(nil)
		if stopping != nil {
			if q.len() >= s.cfg.MaxInFlight {
				recv = nil
			}
			if q.len() > 0 {
				timer.Reset(time.Until(q.next()))
				wake = timer.C
			}
		}
		select {
		case batch, ok := <-recv:
			if !ok {
				for due := q.pop(time.Now(), true, maxWrite); len(due) > 0; due = q.pop(time.Now(), true, maxWrite) {
					write(due)
				}
				return
			}
			q.push(batch, time.Now())
		case <-wake:
		case <-stopping:
			stopping = nil
		}
	}
}

// write sends the replies of batch with XADD, then acks all its entries with
// one XACK, except those whose reply may not have been written: they stay
// pending, and are answered again after ENGINE_CLAIM_IDLE (at least once).
//
// An XADD that Redis answered with an error (a wrong-type key, out of
// memory) is acked anyway, as is a reply NOMKSTREAM dropped: retrying cannot
// make either succeed. The writes run even after ctx ended, so that the
// batch in hand is finished.
func (s *Sim) write(ctx context.Context, batch []outgoing) {
	ctx, cancel := awaited(ctx, opTimeout)
	defer cancel()
	cmds := make(rueidis.Commands, 0, len(batch)+1)
	ids := make([]string, 0, len(batch))
	for _, o := range batch {
		ids = append(ids, o.id)
		if o.stream != "" {
			cmds = append(cmds, s.xadd(o))
		}
	}
	// Redis runs the commands of one connection in order, so an XACK
	// pipelined after the XADDs runs only after they ran: ack after write,
	// in one round trip. A cluster client splits a pipeline by slot across
	// nodes, so there the XACK waits for the XADDs' answers.
	ordered := s.client.Mode() != rueidis.ClientModeCluster
	if ordered {
		cmds = append(cmds, s.xack(ids))
	}
	var start, end time.Time // of the round trip, for the spans
	if s.tracer != nil {
		start = time.Now()
	}
	results := s.client.DoMulti(ctx, cmds...)
	if s.tracer != nil {
		end = time.Now()
	}

	ack := make([]string, 0, len(batch)) // the entries whose reply is settled
	var refused, unsent []error
	next := 0
	for i := range batch {
		o := &batch[i]
		if o.stream == "" {
			ack = append(ack, o.id)
			continue
		}
		err := results[next].Error()
		next++
		missing := false
		switch _, isRedis := rueidis.IsRedisErr(err); {
		case err == nil:
		case rueidis.IsRedisNil(err):
			s.log.Debug("reply stream is gone: reply dropped (NOMKSTREAM)", zap.String("stream", o.stream))
			missing, err = true, nil
		case isRedis:
			s.metrics.errs[opXadd].Inc()
			refused = append(refused, err)
		default:
			s.metrics.errs[opXadd].Inc()
			unsent = append(unsent, err)
			if o.span != nil {
				s.tracer.replied(o.span, o.stream, start, end, len(cmds), false, err)
				s.tracer.failed(o.span, err)
				o.span = nil
			}
			continue
		}
		if o.span != nil {
			s.tracer.replied(o.span, o.stream, start, end, len(cmds), missing, err)
		}
		ack = append(ack, o.id)
	}
	if len(refused) > 0 {
		s.log.Warn("redis refused replies: acked without them", zap.Int("replies", len(refused)), zap.Error(refused[0]))
	}
	if len(unsent) > 0 {
		s.log.Warn("replies may not be written: their entries stay pending until claimed again",
			zap.Int("replies", len(unsent)), zap.Error(unsent[0]))
	}

	var err error
	switch {
	case ordered:
		ack, err = ids, results[len(results)-1].Error()
	case len(ack) > 0:
		err = s.client.Do(ctx, s.xack(ack)).Error()
	}
	if err != nil {
		s.metrics.errs[opXack].Inc()
		s.log.Warn("xack failed: the entries stay pending until claimed again", zap.Int("entries", len(ack)), zap.Error(err))
	}
	for _, o := range batch {
		if o.span != nil {
			s.tracer.acked(o.span, err)
		}
	}
}

func (s *Sim) xadd(o outgoing) rueidis.Completed {
	b, maxlen, payload := s.client.B(), strconv.FormatInt(s.cfg.ReplyMaxLen, 10), rueidis.BinaryString(o.payload)
	if o.nomk {
		return b.Xadd().Key(o.stream).Nomkstream().Maxlen().Almost().Threshold(maxlen).
			Id("*").FieldValue().FieldValue(protocol.Field, payload).Build()
	}
	return b.Xadd().Key(o.stream).Maxlen().Almost().Threshold(maxlen).
		Id("*").FieldValue().FieldValue(protocol.Field, payload).Build()
}

func (s *Sim) xack(ids []string) rueidis.Completed {
	return s.client.B().Xack().Key(s.cfg.RequestStream).Group(s.cfg.Group).Id(ids...).Build()
}

// queue holds replies until they fall due: those due on arrival in arrival
// order (the common case, with no delay), the others in a heap by due time.
type queue struct {
	ready []outgoing
	later dueHeap
}

func (q *queue) len() int { return len(q.ready) + len(q.later) }

// push adds batch, whose due times are all at or after now's.
func (q *queue) push(batch []outgoing, now time.Time) {
	for _, o := range batch {
		if o.due.After(now) {
			heap.Push(&q.later, o)
		} else {
			q.ready = append(q.ready, o)
		}
	}
}

// pop removes and returns up to n replies due at now, or any n when all.
func (q *queue) pop(now time.Time, all bool, n int) []outgoing {
	for len(q.later) > 0 && (all || !q.later[0].due.After(now)) && len(q.ready) < n {
		q.ready = append(q.ready, heap.Pop(&q.later).(outgoing))
	}
	k := min(n, len(q.ready))
	due := q.ready[:k:k]
	q.ready = q.ready[k:]
	if len(q.ready) == 0 {
		q.ready = nil // let the array go
	}
	return due
}

// next is the due time of the earliest delayed reply; q must hold one.
func (q *queue) next() time.Time {
	if len(q.ready) > 0 {
		return q.ready[0].due
	}
	return q.later[0].due
}

// dueHeap is a container/heap of replies ordered by due time.
type dueHeap []outgoing

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(outgoing)) }
func (h *dueHeap) Pop() any {
	old := *h
	o := old[len(old)-1]
	old[len(old)-1] = outgoing{}
	*h = old[:len(old)-1]
	return o
}
