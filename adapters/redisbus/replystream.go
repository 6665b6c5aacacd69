package redisbus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// A per-instance reply stream (ENGINE_REPLY_STREAM holding {instance}) belongs
// to one instance, which reads it alone: no instance reads, and counts as
// unknown, the replies of the others, as all do on a shared stream. The
// instance
//   - creates it, empty, before its reader starts, so that the Engine, which
//     writes to a replyTo with XADD NOMKSTREAM, finds it from the first
//     reply on;
//   - keeps an expiry on it (ReplyStreamTTL), refreshed every
//     ReplyStreamHeartbeat off the hot path, so that the stream of an
//     instance that died without its clean stop disappears by itself;
//   - recreates it when it finds it gone (expired during a long outage,
//     flushed, lost in a failover): a heartbeat, or the reader seeing the
//     stream vanish, triggers the check; replies the Engine wrote to the
//     missing stream were dropped by NOMKSTREAM, and their requests answer
//     202 (or 502 while the reader was disconnected);
//   - trims what it has read, keeping ReplyStreamKeep behind its last read
//     (XTRIM MINID ~, every BacklogInterval), since replies older than the
//     reply timeout serve nobody and the Engine's MAXLEN on reply streams
//     (100,000 for engine-sim) is sized for a shared stream: N instances
//     would otherwise hold N times that;
//   - deletes it at its clean stop.
//
// Creation is one transaction, MULTI, EXISTS, XGROUP CREATE ... $ MKSTREAM,
// XGROUP DESTROY, PEXPIRE, EXEC: the group is only the way to create an empty
// stream without writing an entry; on a stream that exists the transaction
// touches no entry, so every heartbeat runs it as is. It works on Redis and
// miniredis alike, and on a cluster (all commands name the one key).

// mkstreamGroup is the consumer group that exists only inside the creating
// transaction.
const mkstreamGroup = "ensure-user-mkstream"

// ensureReplyStream creates the per-instance reply stream if it is missing
// and sets its expiry, in one transaction. It reports whether the stream
// existed before.
func (b *Bus) ensureReplyStream(ctx context.Context) (existed bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, b.set.xaddTimeout)
	defer cancel()
	c, s := b.client.B(), b.replyStream
	cmds := rueidis.Commands{
		c.Multi().Build(),
		c.Exists().Key(s).Build(),
		c.XgroupCreate().Key(s).Group(mkstreamGroup).Id("$").Mkstream().Build(),
		c.XgroupDestroy().Key(s).Group(mkstreamGroup).Build(),
		c.Pexpire().Key(s).Milliseconds(max(b.set.streamTTL.Milliseconds(), 1)).Build(),
	}
	cmds = append(cmds, c.Exec().Build())
	res := b.client.DoMulti(ctx, cmds...)
	for _, r := range res[:len(res)-1] { // OK, then QUEUED for each command
		if err := r.Error(); err != nil {
			b.errs[opExec].Inc()
			return false, fmt.Errorf("create reply stream: %w", err)
		}
	}
	done, err := res[len(res)-1].ToArray()
	if err == nil && len(done) < 4 {
		err = fmt.Errorf("EXEC answered %d results, want at least 4", len(done))
	}
	if err != nil {
		b.errs[opExec].Inc()
		return false, fmt.Errorf("create reply stream: exec: %w", err)
	}
	n, _ := done[0].AsInt64()
	if err := done[1].Error(); err != nil && !rueidis.IsRedisBusyGroup(err) {
		b.errs[opExec].Inc()
		return false, fmt.Errorf("create reply stream: xgroup create: %w", err)
	}
	for _, r := range done[2:] { // XGROUP DESTROY, PEXPIRE
		if err := r.Error(); err != nil {
			b.errs[opExec].Inc()
			return false, fmt.Errorf("create reply stream: %w", err)
		}
	}
	return n == 1, nil
}

// trimReplyStream trims the per-instance reply stream to ReplyStreamKeep
// behind the last reply read (XTRIM MINID ~, so only whole stream nodes go).
func (b *Bus) trimReplyStream(ctx context.Context) {
	minID := b.trimBefore()
	if !b.perInstance || minID <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, b.set.xaddTimeout)
	defer cancel()
	err := b.client.Do(ctx, b.client.B().Xtrim().Key(b.replyStream).Minid().Almost().
		Threshold(strconv.FormatInt(minID, 10)).Build()).Error()
	if err != nil && ctx.Err() == nil {
		b.errs[opXtrim].Inc()
		b.log.Debug("reply stream trim failed", zap.Error(err))
	}
}

// trimBefore is the id (milliseconds) below which the per-instance reply
// stream may be trimmed: ReplyStreamKeep behind the last reply read, or 0
// when nothing is that old. Every entry below it has been read: ids grow,
// and the reader hands over whatever it read.
func (b *Bus) trimBefore() int64 {
	last, keep := b.lastRead.Load(), b.set.keep.Milliseconds()
	if last <= keep {
		return 0
	}
	return last - keep
}

// checkReplyStreamSoon asks the maintenance goroutine to check the
// per-instance reply stream now, without waiting for the heartbeat.
func (b *Bus) checkReplyStreamSoon() {
	if !b.perInstance {
		return
	}
	select {
	case b.poke <- struct{}{}:
	default: // a check is already due
	}
}

// heartbeat refreshes the per-instance reply stream (recreating it if it is
// gone) and records the outcome for Ready. It reports whether it succeeded.
func (b *Bus) heartbeat(ctx context.Context) bool {
	existed, err := b.ensureReplyStream(ctx)
	if ctx.Err() != nil {
		return true // stopping
	}
	if err != nil {
		if b.streamErr.Swap(&err) == nil {
			b.log.Warn("cannot refresh this instance's reply stream: not ready until it is recreated",
				zap.String("stream", b.replyStream), zap.Error(err))
		}
		return false
	}
	if b.streamErr.Swap(nil) != nil {
		b.log.Info("reply stream refreshed again", zap.String("stream", b.replyStream))
	}
	if !existed {
		b.log.Warn("this instance's reply stream was missing: recreated; replies the Engine wrote meanwhile were dropped",
			zap.String("stream", b.replyStream))
	}
	return true
}

// deleteReplyStream deletes the per-instance reply stream at the clean stop;
// if it fails, the stream expires within ReplyStreamTTL.
func (b *Bus) deleteReplyStream() {
	if !b.perInstance {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.set.xaddTimeout)
	defer cancel()
	if err := b.client.Do(ctx, b.client.B().Del().Key(b.replyStream).Build()).Error(); err != nil {
		b.errs[opDel].Inc()
		b.log.Warn("cannot delete this instance's reply stream: it expires by itself",
			zap.String("stream", b.replyStream), zap.Duration("within", b.set.streamTTL), zap.Error(err))
		return
	}
	b.log.Info("reply stream deleted", zap.String("stream", b.replyStream))
}

// maintain runs the bus's background upkeep until ctx ends: the backlog
// sample (and the trim of a per-instance reply stream) every backlogEvery,
// and for a per-instance reply stream the heartbeat, sooner when the reader
// asks, and again after backoffMax when it failed.
func (b *Bus) maintain(ctx context.Context) {
	defer close(b.upkeep)
	sample := time.NewTicker(b.set.backlogEvery)
	defer sample.Stop()
	var beat <-chan time.Time
	if b.perInstance {
		t := time.NewTicker(b.set.heartbeat)
		defer t.Stop()
		beat = t.C
	}
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	b.sampleBacklog(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sample.C:
			b.sampleBacklog(ctx)
			b.trimReplyStream(ctx)
			continue
		case <-beat:
		case <-b.poke:
		case <-retry.C:
		}
		if !b.heartbeat(ctx) {
			retry.Reset(b.set.backoffMax)
		}
	}
}
