// Package enginesim is the reference Engine over Redis Streams: the runner
// behind the engine-sim binary and the dev mode's embedded Engine, and the
// executable specification of what an Engine must do. Replies come from
// package refengine, so they cannot drift from the in-memory Engine.
//
// # Delivery
//
// Every instance joins one consumer group on the request stream, so several
// instances share the work, and each entry is acked (XACK) only once its
// reply is written: at least once. At start an instance
//
//   - creates the group at id 0 with MKSTREAM when it is missing, so that the
//     commands written while no Engine ran are all processed: an Engine that
//     is down loses nothing the request stream still holds (it is trimmed
//     only by the service's MAXLEN);
//   - drains its own pending list (XREADGROUP id 0): what it read and did not
//     ack before a crash, when it restarts under the same consumer name;
//
// then reads new entries (XREADGROUP >) in batches, and every ClaimIdle/2
// takes over the entries pending longer than ClaimIdle on any consumer
// (XAUTOCLAIM), so that a crashed instance, whatever its name, loses
// nothing. A command may therefore be answered twice, never not at all
// while the stream holds it.
//
// # Batches and delays
//
// A batch costs two round trips whatever its size: its SADDs in one
// pipeline, then its replies (XADD) and one XACK in another, where the XACK
// follows the XADDs on the same connection (a cluster client splits a
// pipeline by slot, so there the XACK waits for the XADDs' answers). With a
// reply delay each reply waits on its own in a queue and is written with
// whatever else is due, while the reader reads on, up to MaxInFlight
// waiting replies. A reply goes to the request's replyTo with NOMKSTREAM, or
// to ReplyStream without it; see replyStream for why. An entry that is not
// a request with a requestId is acked and skipped; another function than
// createUser is answered status error, as refengine answers it.
//
// The Redis commands used - XGROUP CREATE MKSTREAM, XREADGROUP, XAUTOCLAIM,
// XADD NOMKSTREAM MAXLEN ~, XACK, SADD - all work on miniredis too.
package enginesim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/internal/backoff"
	"github.com/ensure-user/ensure-user/internal/refengine"
)

// Timing of the runner's Redis commands.
const (
	// opTimeout bounds one round trip that does not block.
	opTimeout = 5 * time.Second
	// readMargin is added to XREADGROUP BLOCK for the read's deadline, so an
	// idle read ends with Redis' own nil, and only a dead connection hits it:
	// entries a timed-out read took wait for a claim.
	readMargin = opTimeout
	backoffMin = 20 * time.Millisecond
	backoffMax = time.Second
)

// Sim is the reference Engine on one Redis client. Create it with New and
// call Run once.
type Sim struct {
	cfg        Config
	log        *zap.Logger
	client     rueidis.Client
	users      *UserSet
	opts       []refengine.Option
	failing    *refengine.Engine // answers the requests drawn by ErrorRatio
	metrics    *metrics
	claimEvery time.Duration
	tracer     *tracer // nil: tracing off
}

// New returns an Engine reading cfg.RequestStream through client, with the
// defaults applied to the zero fields of cfg (Config{} is the default
// Engine). It fails when cfg is invalid, or when its metrics cannot be
// registered on reg (nil: no metrics are registered). New sends nothing to
// Redis; the caller closes client after Run returned. opts add what Config
// does not hold, such as tracing.
func New(cfg Config, log *zap.Logger, client rueidis.Client, reg prometheus.Registerer, opts ...Option) (*Sim, error) {
	cfg = cfg.withDefaults(defaultConsumer)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("enginesim: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("enginesim: %w", err)
	}
	var engineOpts []refengine.Option
	if cfg.Legacy {
		engineOpts = append(engineOpts, refengine.WithLegacy())
	}
	users := NewUserSet(client, cfg.UsersKey)
	s := &Sim{
		cfg:        cfg,
		log:        log.Named("enginesim"),
		client:     client,
		users:      users,
		opts:       engineOpts,
		failing:    refengine.New(users, append(engineOpts, refengine.WithErrorRatio(1))...),
		metrics:    m,
		claimEvery: cfg.ClaimIdle / 2,
	}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// defaultConsumer is hostname-pid: unique per process, so that two instances
// never share a pending list.
func defaultConsumer() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "engine-sim"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

// Config returns the configuration in effect, defaults applied.
func (s *Sim) Config() Config { return s.cfg }

// Run answers commands until ctx ends. Then it lets the read in flight end
// (within ReadBlock) and finishes what it read: every reply is written and
// acked, those still waiting for their delay at once. Redis being
// unreachable is retried with backoff, without returning; a batch read but
// not answered then is answered first once Redis is back, or, if Run stops
// before, stays pending for a restart or a claim. Run returns nil
// once ctx ended, or an error when Redis refuses to create the consumer group
// for a reason retrying cannot fix (the request stream's key holds another
// type, or the user lacks the permission).
func (s *Sim) Run(ctx context.Context) error {
	s.log.Info("engine running",
		zap.String("requests", s.cfg.RequestStream), zap.String("replies", s.cfg.ReplyStream),
		zap.String("group", s.cfg.Group), zap.String("consumer", s.cfg.Consumer), zap.String("users", s.cfg.UsersKey),
		zap.Duration("delay", s.cfg.ReplyDelay), zap.Duration("delay_max", s.cfg.ReplyDelayMax),
		zap.Float64("error_ratio", s.cfg.ErrorRatio), zap.Float64("drop_ratio", s.cfg.DropRatio),
		zap.Bool("legacy", s.cfg.Legacy), zap.Bool("tracing", s.tracer != nil))
	batches := make(chan []outgoing)
	written := make(chan struct{})
	go func() {
		defer close(written)
		s.writeLoop(ctx, batches)
	}()
	err := s.readLoop(ctx, batches)
	close(batches)
	<-written
	s.log.Info("engine stopped")
	return err
}

// cursor is where the reader stands.
type cursor struct {
	grouped   bool      // the group exists, as far as the reader knows
	pending   string    // id after which to read the own pending list; "" once drained
	claimFrom string    // XAUTOCLAIM cursor
	claimAt   time.Time // start of the next claim pass
	held      batch     // a batch read but not answered (Redis failed): answered first
}

// readLoop runs steps until ctx ends, retrying failed ones with backoff.
func (s *Sim) readLoop(ctx context.Context, out chan<- []outgoing) error {
	var c cursor
	failing := false
	for retry := 0; ctx.Err() == nil; {
		err := s.step(ctx, &c, out)
		if err == nil {
			if failing {
				s.log.Info("redis commands succeed again")
				failing = false
			}
			retry = 0
			continue
		}
		if ctx.Err() != nil {
			break
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return err
		}
		if isNoGroup(err) {
			s.log.Warn("consumer group is gone (request stream deleted?): creating it again", zap.Error(err))
			c = cursor{}
		} else if !failing {
			s.log.Warn("redis command failed: retrying with backoff", zap.Error(err))
			failing = true
		}
		if !backoff.Wait(ctx, retry, backoffMin, backoffMax) {
			break
		}
		retry++
	}
	return nil
}

// step answers the next batch: the one held back by a failure, or else a
// new one from next.
func (s *Sim) step(ctx context.Context, c *cursor, out chan<- []outgoing) error {
	if len(c.held.entries) == 0 {
		start := time.Now()
		entries, op, err := s.next(ctx, c, start)
		if err != nil || len(entries) == 0 {
			return err
		}
		s.metrics.batch.Observe(float64(len(entries)))
		c.held = batch{entries: entries, read: read{op: op, start: start, end: time.Now()}}
	}
	if err := s.handle(ctx, c.held, out); err != nil {
		return err // c.held is answered again after the backoff
	}
	c.held = batch{}
	return nil
}

// next does the next thing the reader has to do at now: create the group,
// or read a batch from its own pending list, from idle entries (claim), or
// from new ones. It returns the entries read with the Redis command that
// read them.
func (s *Sim) next(ctx context.Context, c *cursor, now time.Time) ([]rueidis.XRangeSlice, string, error) {
	switch {
	case !c.grouped:
		if err := s.createGroup(ctx); err != nil {
			return nil, "", err
		}
		*c = cursor{grouped: true, pending: "0", claimFrom: "0-0", claimAt: now}
		return nil, "", nil
	case c.pending != "":
		entries, err := s.readGroup(ctx, c.pending, 0)
		if err != nil {
			return nil, "", err
		}
		if len(entries) == 0 {
			c.pending = ""
			return nil, "", nil
		}
		c.pending = entries[len(entries)-1].ID
		return entries, operationXread, nil
	case !now.Before(c.claimAt):
		entries, next, err := s.claim(ctx, c.claimFrom)
		if err != nil {
			return nil, "", err
		}
		if c.claimFrom = next; next == "0-0" {
			c.claimAt = now.Add(s.claimEvery)
		}
		return entries, operationXclaim, nil
	default:
		entries, err := s.readGroup(ctx, ">", min(s.cfg.ReadBlock, c.claimAt.Sub(now)))
		return entries, operationXread, err
	}
}

// handle answers a batch and hands its replies to the writer. Once read, a
// batch is answered even if ctx ends meanwhile.
func (s *Sim) handle(ctx context.Context, b batch, out chan<- []outgoing) error {
	actx, cancel := awaited(ctx, opTimeout)
	replies, err := s.answer(actx, b)
	cancel()
	if err != nil {
		return err
	}
	out <- replies
	return nil
}

// createGroup creates the consumer group at id 0, and the request stream
// with it, unless the group exists.
func (s *Sim) createGroup(ctx context.Context) error {
	ctx, cancel := awaited(ctx, opTimeout)
	defer cancel()
	err := s.client.Do(ctx, s.client.B().XgroupCreate().Key(s.cfg.RequestStream).Group(s.cfg.Group).
		Id("0").Mkstream().Build()).Error()
	switch {
	case err == nil:
		s.log.Info("consumer group created: it reads the request stream from its start",
			zap.String("stream", s.cfg.RequestStream), zap.String("group", s.cfg.Group))
		return nil
	case rueidis.IsRedisBusyGroup(err):
		return nil
	}
	s.metrics.errs[opXgroup].Inc()
	if re, ok := rueidis.IsRedisErr(err); ok && (strings.HasPrefix(re.Error(), "WRONGTYPE") || strings.HasPrefix(re.Error(), "NOPERM")) {
		return permanentError{fmt.Errorf("xgroup create %s: %w", s.cfg.RequestStream, err)}
	}
	return fmt.Errorf("xgroup create: %w", err)
}

// readGroup reads up to ReadCount entries after id (">" for new ones) with
// XREADGROUP, blocking up to block when block is positive.
func (s *Sim) readGroup(ctx context.Context, id string, block time.Duration) ([]rueidis.XRangeSlice, error) {
	b := s.client.B().Xreadgroup().Group(s.cfg.Group, s.cfg.Consumer).Count(int64(s.cfg.ReadCount))
	var cmd rueidis.Completed
	timeout := opTimeout
	if block > 0 {
		// BLOCK 0 would wait forever; and BLOCK makes rueidis use a
		// connection of its own, off the pipeline the writes share.
		cmd = b.Block(max(block.Milliseconds(), 1)).Streams().Key(s.cfg.RequestStream).Id(id).Build()
		timeout = block + readMargin
	} else {
		cmd = b.Streams().Key(s.cfg.RequestStream).Id(id).Build()
	}
	ctx, cancel := awaited(ctx, timeout)
	defer cancel()
	streams, err := s.client.Do(ctx, cmd).AsXReadSlices()
	switch {
	case rueidis.IsRedisNil(err):
		return nil, nil
	case err != nil:
		s.metrics.errs[opXreadgroup].Inc()
		return nil, fmt.Errorf("xreadgroup: %w", err)
	}
	return streams[s.cfg.RequestStream], nil
}

// claim takes over up to ReadCount entries pending longer than ClaimIdle,
// from from on, and returns them with the cursor of the next call ("0-0"
// when the pass is over).
func (s *Sim) claim(ctx context.Context, from string) ([]rueidis.XRangeSlice, string, error) {
	ctx, cancel := awaited(ctx, opTimeout)
	defer cancel()
	res, err := s.client.Do(ctx, s.client.B().Xautoclaim().Key(s.cfg.RequestStream).Group(s.cfg.Group).
		Consumer(s.cfg.Consumer).MinIdleTime(strconv.FormatInt(s.cfg.ClaimIdle.Milliseconds(), 10)).
		Start(from).Count(int64(s.cfg.ReadCount)).Build()).ToArray()
	if err != nil {
		s.metrics.errs[opXautoclaim].Inc()
		return nil, "", fmt.Errorf("xautoclaim: %w", err)
	}
	entries, next, err := parseAutoclaim(res)
	if err != nil {
		return nil, "", fmt.Errorf("xautoclaim: %w", err)
	}
	if len(entries) > 0 {
		s.metrics.claimed.Add(float64(len(entries)))
		s.log.Info("claimed idle pending entries", zap.Int("entries", len(entries)),
			zap.Duration("idle_over", s.cfg.ClaimIdle))
	}
	return entries, next, nil
}

// parseAutoclaim reads an XAUTOCLAIM answer: the next cursor, the claimed
// entries, and (Redis 7) the ids of deleted entries, which Redis already
// removed from the pending list.
func parseAutoclaim(res []rueidis.RedisMessage) ([]rueidis.XRangeSlice, string, error) {
	if len(res) < 2 {
		return nil, "", fmt.Errorf("answer has %d elements, want at least 2", len(res))
	}
	next, err := res[0].ToString()
	if err != nil {
		return nil, "", err
	}
	items, err := res[1].ToArray()
	if err != nil {
		return nil, "", err
	}
	entries := make([]rueidis.XRangeSlice, 0, len(items))
	for _, it := range items {
		if it.IsNil() { // Redis 6.2: an entry deleted while pending
			continue
		}
		e, err := it.AsXRangeSlice()
		if err != nil {
			return nil, "", err
		}
		entries = append(entries, e)
	}
	return entries, next, nil
}

// awaited returns the context of one Redis round trip: bounded by timeout,
// so that a dead connection cannot hold the runner, but not cancelled by ctx.
// An answer abandoned in flight could carry entries Redis has delivered to
// this consumer (or let it claim), which would then wait, unanswered, until
// a restart or another claim; so a command sent is always awaited.
func awaited(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), timeout)
}

// permanentError is a Redis refusal that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// isNoGroup reports whether err says the group (or its stream) is missing.
func isNoGroup(err error) bool {
	var re *rueidis.RedisError
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOGROUP")
}
