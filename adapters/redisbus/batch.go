package redisbus

import (
	"context"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// Batching. Each XADD written alone costs a write(2) to Redis and a read(2)
// of its reply, and on loopback a write carries the whole TCP path of both
// ends: at c64 that was 7.7 of the ~28 us the service spent per request
// above its HTTP floor. rueidis' MaxFlushDelay does not help here: it
// delays a flush only while other commands still wait for replies, and
// requests reach their XADD one at a time (each after its ~60 us token
// check), by when the previous XADD was answered.
//
// So while many requests are waiting (the service is busy), Send holds its
// XADD for at most one window and writes it with the others of that window
// in one DoMulti: one write, one read, however many commands. A quiet
// service sends each XADD at once, so it pays no latency for this.

// batchMax caps the commands of one batch; a full batch goes at once.
const batchMax = 128

// batchAbove is how many requests must be waiting for replies before Send
// batches: below it the service is quiet enough to write each XADD at once.
const batchAbove = 8

// batcher gathers XADDs into batches. It is safe for concurrent use.
type batcher struct {
	window time.Duration // how long the first command of a batch waits for others
	do     func(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult
	bound  *deadlines // each batch's deadline, as a lone XADD's

	mu      sync.Mutex
	pending []*xaddOp
}

// xaddOp is one command waiting in a batch, and then its result.
type xaddOp struct {
	cmd  rueidis.Completed
	id   string // the entry id Redis gave the command
	err  error
	done chan struct{} // buffered for one; reused with the op
}

var xaddOps = sync.Pool{New: func() any { return &xaddOp{done: make(chan struct{}, 1)} }}

// send writes cmd in the current batch and returns its result (the entry
// id) when the batch's replies are in.
func (b *batcher) send(cmd rueidis.Completed) (string, error) {
	op := xaddOps.Get().(*xaddOp)
	op.cmd, op.id, op.err = cmd, "", nil
	b.mu.Lock()
	b.pending = append(b.pending, op)
	n := len(b.pending)
	var full []*xaddOp
	if n >= batchMax {
		full, b.pending = b.pending, nil
	}
	b.mu.Unlock()
	switch {
	case full != nil:
		b.flush(full)
	case n == 1: // the batch's first command starts its window
		time.AfterFunc(b.window, b.flushPending)
	}
	<-op.done
	id, err := op.id, op.err
	op.cmd, op.id, op.err = rueidis.Completed{}, "", nil
	xaddOps.Put(op)
	return id, err
}

// flushPending sends the batch gathered so far (a window ended).
func (b *batcher) flushPending() {
	b.mu.Lock()
	ops := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(ops) > 0 {
		b.flush(ops)
	}
}

// flush writes ops in one DoMulti, bounded like a lone XADD, and hands each
// its own result.
func (b *batcher) flush(ops []*xaddOp) {
	cmds := make([]rueidis.Completed, len(ops))
	for i, op := range ops {
		cmds[i] = op.cmd
	}
	results := b.do(b.bound.at(time.Now()), cmds...)
	for i, op := range ops {
		op.id, op.err = results[i].ToString()
		op.done <- struct{}{}
	}
}
