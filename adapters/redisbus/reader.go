package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/internal/correlate"
	"github.com/ensure-user/ensure-user/internal/backoff"
	"github.com/ensure-user/ensure-user/internal/protocol"
)

// The reply reader: one goroutine per bus that follows the reply stream with
// XREAD from the id it resolved at start, and hands every reply to the
// request waiting for it.

// readerState is where the reply reader's start-up stands. New waits until
// the first attempt has settled; Send publishes only once started.
type readerState int32

const (
	// readerStarting: the first attempt to resolve the start id runs.
	readerStarting readerState = iota
	// readerRetrying: an attempt failed and the next one waits its backoff.
	readerRetrying
	// readerStarted: the start id is resolved and replies are read.
	readerStarted
	// readerRefused: the server cannot serve the configuration (WAITAOF
	// missing); retrying cannot help.
	readerRefused
	// readerStopped: the bus was stopped before the reader started.
	readerStopped
)

// startup is the reply reader's start-up state machine: starting, then
// retrying as long as attempts fail for reasons that may pass, then started,
// refused or stopped for good.
type startup struct {
	mu      sync.Mutex
	state   readerState
	err     error         // why retrying, refused or stopped
	settled chan struct{} // closed once the first attempt settled (any state but starting)
	ready   chan struct{} // closed once started
	up      atomic.Bool   // started, for Send without the lock
}

func (s *startup) set(st readerState, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == readerStarted || s.state == readerRefused || s.state == readerStopped {
		return // final
	}
	if s.state == readerStarting {
		close(s.settled)
	}
	s.state, s.err = st, err
	if st == readerStarted {
		s.up.Store(true)
		close(s.ready)
	}
}

// get returns the state and, unless started, why.
func (s *startup) get() (readerState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.err
}

// started reports whether the reader has its start id (Send may publish).
func (s *startup) started() bool { return s.up.Load() }

// firstSettled waits until the first attempt settled and returns the state
// then.
func (s *startup) firstSettled() (readerState, error) {
	<-s.settled
	return s.get()
}

// run is the reply reader: the only goroutine that reads the reply stream.
func (b *Bus) run(ctx context.Context) {
	defer close(b.done)
	last, ok := b.resolveStart(ctx)
	if !ok {
		return
	}
	for retry := 0; ; {
		next, err := b.read(ctx, last)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			b.setConnected(false, err)
			if !backoff.Wait(ctx, retry, b.set.backoffMin, b.set.backoffMax) {
				return
			}
			retry++
			continue
		}
		b.setConnected(true, nil)
		retry, last = 0, next
	}
}

// resolveStart finds the id after which the reader starts: the reply
// stream's last entry, or 0-0 when it has none. Before, it checks what the
// configuration needs of the server (WAITAOF), and creates a per-instance
// reply stream. It retries until it succeeds or ctx ends, moving b.start
// through its states; a refusal retrying cannot fix ends it.
func (b *Bus) resolveStart(ctx context.Context) (string, bool) {
	for retry := 0; ; retry++ {
		id, err := b.prepare(ctx)
		if err == nil {
			b.connected.Store(true)
			b.start.set(readerStarted, nil)
			b.log.Info("reply reader started", zap.String("stream", b.replyStream), zap.String("after", id),
				zap.Bool("per_instance", b.perInstance), zap.String("durable_send", b.durableName()))
			return id, true
		}
		if ctx.Err() != nil {
			b.start.set(readerStopped, ctx.Err())
			return "", false
		}
		var perm permanentError
		if errors.As(err, &perm) {
			if retry > 0 { // the first attempt's refusal is New's error
				b.log.Error("the Engine bus cannot start: Send refuses and readiness fails until the configuration or the server changes",
					zap.Error(perm.err))
			}
			b.start.set(readerRefused, perm.err)
			return "", false
		}
		if retry == 0 {
			b.log.Warn("reply reader cannot look up its start id yet: retrying; Send refuses until then", zap.Error(err))
		}
		b.setConnected(false, err)
		b.start.set(readerRetrying, err)
		if !backoff.Wait(ctx, retry, b.set.backoffMin, b.set.backoffMax) {
			b.start.set(readerStopped, ctx.Err())
			return "", false
		}
	}
}

// prepare is one attempt of resolveStart.
func (b *Bus) prepare(ctx context.Context) (string, error) {
	if err := b.checkDurable(ctx); err != nil {
		return "", err
	}
	if b.perInstance {
		if _, err := b.ensureReplyStream(ctx); err != nil {
			return "", err
		}
	}
	return b.lastID(ctx, b.set.xaddTimeout)
}

// permanentError is a start-up refusal that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// lastID returns the id of the reply stream's newest entry, or 0-0 when it
// has none, waiting at most timeout.
func (b *Bus) lastID(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	entries, err := b.client.Do(ctx, b.client.B().Xrevrange().Key(b.replyStream).
		End("+").Start("-").Count(1).Build()).AsXRange()
	if err != nil {
		b.errs[opXrevrange].Inc()
		return "", fmt.Errorf("xrevrange: %w", err)
	}
	if len(entries) == 0 {
		return "0-0", nil
	}
	return entries[0].ID, nil
}

// read runs one XREAD after last, dispatches what it returns, and returns
// the id of the last entry seen.
func (b *Bus) read(ctx context.Context, last string) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, b.set.block+b.set.readMargin)
	defer cancel()
	// BLOCK makes rueidis send this on a connection of its blocking pool
	// (mux.go: cmd.IsBlock() -> m.blocking(m.dpool, ...)), never on the
	// shared pipeline, so a waiting read delays no XADD.
	streams, err := b.client.Do(rctx, b.client.B().Xread().Count(b.set.readCount).
		Block(b.set.block.Milliseconds()).Streams().Key(b.replyStream).Id(last).Build()).AsXReadSlices()
	if rueidis.IsRedisNil(err) {
		return b.afterIdle(ctx, last) // BLOCK elapsed with nothing new
	}
	if err != nil {
		if ctx.Err() == nil { // not merely stopping
			b.errs[opXread].Inc()
		}
		return last, fmt.Errorf("xread: %w", err)
	}
	for _, e := range streams[b.replyStream] {
		last = e.ID
		b.dispatch(e)
	}
	if ms, _ := splitID(last); ms > 0 {
		b.lastRead.Store(int64(ms))
	}
	return last, nil
}

// afterIdle runs when a read found nothing new. If the reply stream is now
// missing, empty, or ends before last, it was deleted (and may be recreated
// with ids below last, when Redis' clock is behind), so the reader restarts
// from 0-0. Reading entries again is harmless: replies are matched by request
// id, never by position. One case stays undetected: a stream deleted and
// recreated within the millisecond of last, whose first entries reuse ids up
// to last; their requests time out.
func (b *Bus) afterIdle(ctx context.Context, last string) (string, error) {
	newest, err := b.lastID(ctx, b.set.readMargin) // a stalled server must not hold the reader longer than a read
	if err != nil {
		return last, err
	}
	if newest != "0-0" && !idLess(newest, last) {
		return last, nil
	}
	if last != "0-0" {
		b.log.Info("reply stream deleted or rewound: reading it from the start", zap.String("was_after", last))
		b.checkReplyStreamSoon()
	}
	return "0-0", nil
}

// idLess reports whether stream id a sorts before b; ids are "ms-seq".
func idLess(a, b string) bool {
	ams, aseq := splitID(a)
	bms, bseq := splitID(b)
	return ams < bms || (ams == bms && aseq < bseq)
}

func splitID(id string) (ms, seq uint64) {
	m, s, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(s, 10, 64)
	return ms, seq
}

// dispatch hands one reply entry to its waiter, or counts why it cannot.
func (b *Bus) dispatch(e rueidis.XRangeSlice) {
	for _, fv := range e.FieldValues {
		if fv.Field != protocol.Field {
			continue
		}
		r, err := protocol.DecodeReplyString(fv.Value)
		if err != nil {
			b.metrics.Reply(correlate.Malformed, 0)
			b.log.Warn("malformed reply skipped", zap.String("entry", e.ID), zap.Error(err))
			return
		}
		res, _ := b.table.Deliver(r, b.metrics.Reply)
		if res != correlate.Delivered {
			b.log.Debug("reply not delivered", zap.String("entry", e.ID),
				zap.String("request_id", r.RequestID), zap.Stringer("result", res))
		}
		return
	}
	b.metrics.Reply(correlate.Malformed, 0)
	b.log.Warn("reply without a message field skipped", zap.String("entry", e.ID))
}

// setConnected records the reader's state and logs its changes.
func (b *Bus) setConnected(ok bool, err error) {
	if was := b.connected.Swap(ok); was != ok {
		if ok {
			b.log.Info("reply reader connected")
		} else {
			b.log.Warn("reply reader disconnected: replies wait in the stream until it reconnects", zap.Error(err))
		}
	}
}
