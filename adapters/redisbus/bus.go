// Package redisbus is the Engine bus over Redis Streams: it publishes each
// createUser command with XADD on the request stream, and one reply reader
// per process follows the reply stream with XREAD and hands every reply to
// the request waiting for it (package correlate), and to no other.
//
// Beside the hot path (one XADD per request, one XREAD per batch of
// replies) a maintenance goroutine keeps this instance's own reply stream
// alive when ENGINE_REPLY_STREAM holds {instance} (replystream.go) and
// samples the request stream's backlog (backlog.go); ENGINE_DURABLE_SEND
// adds a WAIT or WAITAOF to each XADD (durable.go).
//
// # Keys and Redis Cluster
//
// Every command the bus sends names exactly one key: XADD the request
// stream, XREAD the reply stream, the reply stream's upkeep, and XLEN/XINFO
// of the request stream. The reference Engine is the same: SADD on the users
// set, XADD on one reply stream, XACK on the request stream, each alone. So
// the streams need no hash tags, and on a cluster they spread over the shards
// by their names; per-instance reply streams spread too, as {instance} is
// replaced braces and all. A hash tag becomes necessary only for a command
// that names two keys (MULTI/EXEC or a script across streams): then give
// those keys one tag, such as {engine}:requests and {engine}:replies.
package redisbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/internal/correlate"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/ports"
)

// Defaults of the bus's own timing; see settings.
const (
	// ReadBlock is the XREAD BLOCK of the reply reader. The read's deadline
	// is ReadBlock plus readMargin, so an idle read ends with Redis' own nil
	// answer, and only a dead or stalled connection hits the deadline, which
	// makes rueidis close that connection; the next read dials a new one.
	ReadBlock = time.Second
	// ReadCount is the XREAD COUNT: one read hands over up to this many replies.
	ReadCount = 512
	// XaddTimeout bounds one XADD (capped by the reply timeout), so no request
	// hangs on a half-open connection: when it fires the outcome is unknown.
	// ENGINE_SEND_TIMEOUT replaces it.
	XaddTimeout = 2 * time.Second
	// DurableWaitMax caps the WAIT/WAITAOF of ENGINE_DURABLE_SEND, which is
	// also at most a quarter of the reply timeout, so that proving a command
	// durable leaves most of the wait to the Engine.
	DurableWaitMax = time.Second
	// ReplyStreamTTL is the expiry kept on a per-instance reply stream: an
	// instance that dies without its clean stop leaves its stream for at most
	// this long.
	ReplyStreamTTL = time.Minute
	// ReplyStreamHeartbeat is how often a per-instance reply stream's TTL is
	// refreshed (and the stream recreated if it vanished); a quarter of the
	// TTL, so three heartbeats may fail before the stream expires.
	ReplyStreamHeartbeat = ReplyStreamTTL / 4
	// ReplyStreamKeep is how much of its own reply stream an instance keeps
	// behind the last reply it read, for whoever inspects it; older entries
	// are trimmed (XTRIM MINID ~) every BacklogInterval.
	ReplyStreamKeep = 10 * time.Second
	// BacklogInterval is how often the request stream's backlog is sampled.
	BacklogInterval = 5 * time.Second
	// BacklogWarnEvery is the least time between two warnings that the
	// backlog nears the request stream's MAXLEN.
	BacklogWarnEvery = time.Minute
	// BacklogNearRatio is the fraction of ENGINE_REQUEST_MAXLEN beyond which
	// the unprocessed backlog is near retention: past MAXLEN, XADD trims the
	// oldest commands whether the Engine read them or not.
	BacklogNearRatio = 0.8
)

// xaddSlack is how long sends share one XADD deadline: a hundredth of the
// bound, within 1 to 10 ms.
func xaddSlack(bound time.Duration) time.Duration {
	return min(max(bound/100, time.Millisecond), 10*time.Millisecond)
}

const (
	readMargin = time.Second
	backoffMin = 20 * time.Millisecond
	backoffMax = time.Second
)

// settings are the bus's timings; tests shorten them.
type settings struct {
	block       time.Duration // XREAD BLOCK
	readMargin  time.Duration // added to block for the read's deadline
	xaddTimeout time.Duration // bound of one XADD, and of the start-id lookup and Ready's PING
	readCount   int64
	backoffMin  time.Duration // wait before the second retry; the first is immediate
	backoffMax  time.Duration
	remember    int // abandoned and answered ids remembered, see correlate.NewTable

	durableWait   time.Duration // server-side timeout of WAIT / WAITAOF
	streamTTL     time.Duration // expiry of a per-instance reply stream
	heartbeat     time.Duration // refresh of that expiry
	keep          time.Duration // reply stream history kept behind the last read
	backlogEvery  time.Duration // backlog sampling interval
	backlogWarn   time.Duration // least time between backlog warnings
	maxGroupLabel int           // consumer groups exported as backlog series
}

func defaultSettings(cfg Config) settings {
	s := settings{
		block: ReadBlock, readMargin: readMargin, xaddTimeout: XaddTimeout, readCount: ReadCount,
		backoffMin: backoffMin, backoffMax: backoffMax, remember: correlate.DefaultRemember,
		durableWait: DurableWaitMax, streamTTL: ReplyStreamTTL, heartbeat: ReplyStreamHeartbeat,
		keep: ReplyStreamKeep, backlogEvery: BacklogInterval, backlogWarn: BacklogWarnEvery,
		maxGroupLabel: maxGroupLabels,
	}
	if cfg.SendTimeout > 0 {
		s.xaddTimeout = cfg.SendTimeout
	}
	if cfg.ReplyTimeout > 0 && cfg.ReplyTimeout < s.xaddTimeout {
		s.xaddTimeout = cfg.ReplyTimeout
	}
	if cfg.ReplyTimeout > 0 {
		s.durableWait = min(s.durableWait, max(cfg.ReplyTimeout/4, time.Millisecond))
	}
	// An Engine stall can make every waiting request time out at once; their
	// replies, when the Engine resumes, must count as late, not as other
	// instances' (unknown), so the table remembers that many abandoned ids
	// (about 100 bytes each).
	s.remember = max(s.remember, cfg.MaxWaiting)
	return s
}

// Bus is the Engine bus over Redis Streams. It is safe for concurrent use.
type Bus struct {
	cfg         Config
	set         settings
	log         *zap.Logger
	client      rueidis.Client
	table       *correlate.Table
	metrics     *correlate.Metrics
	errs        map[string]prometheus.Counter // redis_errors_total by op
	durable     map[string]prometheus.Counter // engine_durable_sends_total by result
	backlog     *backlogMetrics
	replyStream string // cfg.ReplyStreamName(): the stream this instance reads
	perInstance bool   // replyStream is this instance's own: created, kept alive, deleted

	start     startup       // the reply reader's start-up: Send publishes once it has its start id
	connected atomic.Bool   // the reader's last command succeeded
	stopped   atomic.Bool   // cleanup ran: Send refuses
	done      chan struct{} // closed when the reader has exited

	streamErr atomic.Pointer[error] // the per-instance stream is missing and could not be recreated
	lastRead  atomic.Int64          // millisecond part of the last reply id read, for trimming
	xaddBound *deadlines            // the XADD's bound, shared by the sends of a few milliseconds
	tracer    trace.Tracer          // nil: no spans
	prop      propagation.TextMapPropagator
	batch     *batcher      // nil: every XADD is written at once
	maxLen    string        // the request stream's MAXLEN, formatted once
	poke      chan struct{} // asks the maintenance loop to check the reply stream now
	upkeep    chan struct{} // closed when the maintenance goroutine has exited
}

var _ ports.EngineBus = (*Bus)(nil)

// Redis command names used as the op label of redis_errors_total.
const (
	opXadd      = "xadd"
	opXread     = "xread"
	opXrevrange = "xrevrange"
	opPing      = "ping"
	opWait      = "wait"    // WAIT or WAITAOF after the XADD (ENGINE_DURABLE_SEND)
	opExec      = "exec"    // the per-instance reply stream's create-and-expire transaction
	opDel       = "del"     // the per-instance reply stream's deletion at stop
	opXlen      = "xlen"    // backlog sampling
	opXinfo     = "xinfo"   // backlog sampling
	opCommand   = "command" // start-up probes (COMMAND INFO, INFO)
	opXtrim     = "xtrim"   // the per-instance reply stream's trim
)

// New returns a bus publishing on cfg.RequestStream and reading replies from
// cfg.ReplyStreamName() through client, and starts its reply reader and its
// maintenance goroutine. The reader first looks up the reply stream's last
// entry id (creating the stream first when it is per-instance, and checking
// that the server has WAITAOF when ENGINE_DURABLE_SEND=aof), and reads only
// what comes after it; New waits for that first attempt only, so it does
// not fail or hang while Redis is down: the reader retries in the
// background, and Send refuses until it succeeded. New fails when the first
// attempt reached Redis and found it cannot serve the configuration (WAITAOF
// missing, or appendonly off, with ENGINE_DURABLE_SEND=aof).
//
// Metrics are registered on reg (nil: none): those of correlate.NewMetrics,
// ensure_user_redis_errors_total{op}, ensure_user_engine_durable_sends_total
// {result}, ensure_user_engine_request_backlog{kind,group} and
// ensure_user_engine_backlog_near_retention. The cleanup stops the reader and
// the maintenance goroutine, deletes a per-instance reply stream, and waits
// for all of it; it does not close client.
func New(cfg Config, log *zap.Logger, client rueidis.Client, reg prometheus.Registerer, opts ...Option) (*Bus, func(), error) {
	return newBus(cfg, log, client, reg, defaultSettings(cfg), opts...)
}

func newBus(cfg Config, log *zap.Logger, client rueidis.Client, reg prometheus.Registerer, set settings, opts ...Option) (*Bus, func(), error) {
	if err := cfg.Validate().Err(); err != nil {
		return nil, nil, fmt.Errorf("redisbus: %w", err)
	}
	b := &Bus{
		cfg:         cfg,
		set:         set,
		log:         log.Named("redisbus"),
		client:      client,
		table:       correlate.NewTable(set.remember),
		replyStream: cfg.ReplyStreamName(),
		perInstance: cfg.PerInstanceReplies(),
		start:       startup{settled: make(chan struct{}), ready: make(chan struct{})},
		done:        make(chan struct{}),
		poke:        make(chan struct{}, 1),
		upkeep:      make(chan struct{}),
		xaddBound:   newDeadlines(set.xaddTimeout, xaddSlack(set.xaddTimeout)),
		maxLen:      strconv.FormatInt(cfg.RequestMaxLen, 10),
	}
	for _, o := range opts {
		o(b)
	}
	if cfg.SendBatchWindow > 0 {
		b.batch = &batcher{window: cfg.SendBatchWindow, do: client.DoMulti, bound: b.xaddBound}
	}
	var err error
	if b.metrics, err = correlate.NewMetrics(reg, b.Waiting, b.connected.Load); err != nil {
		return nil, nil, err
	}
	if b.errs, err = newErrorCounters(reg); err != nil {
		return nil, nil, err
	}
	if b.durable, err = newDurableCounters(reg); err != nil {
		return nil, nil, err
	}
	if b.backlog, err = newBacklogMetrics(reg); err != nil {
		return nil, nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	go b.run(ctx)
	if st, err := b.start.firstSettled(); st == readerRefused {
		cancel()
		<-b.done
		return nil, nil, err
	}
	go b.maintain(ctx)
	var once sync.Once
	return b, func() {
		once.Do(func() {
			b.stopped.Store(true)
			cancel()
			<-b.done
			<-b.upkeep
			b.connected.Store(false)
			b.deleteReplyStream()
		})
	}, nil
}

func newErrorCounters(reg prometheus.Registerer) (map[string]prometheus.Counter, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ensure_user", Name: "redis_errors_total",
		Help: "Failed Redis commands of the Engine bus, by command.",
	}, []string{"op"})
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	errs := map[string]prometheus.Counter{}
	for _, op := range []string{opXadd, opXread, opXrevrange, opPing, opWait, opExec, opDel, opXlen, opXinfo, opCommand, opXtrim} {
		errs[op] = vec.WithLabelValues(op)
	}
	return errs, nil
}

// Send registers interest in cmd.RequestID, then publishes cmd with one
// XADD MAXLEN ~ on the request stream, bounded by its own timeout (XaddTimeout
// or the reply timeout, whichever is shorter), asking for the reply on this
// instance's reply stream. With ENGINE_DURABLE_SEND the XADD is followed, on
// the same connection, by WAIT 1 or WAITAOF 1 0 (see durable.go). It returns
// the channel that receives the reply. Errors:
//   - ctx's error when ctx had ended when Send was called; once it has
//     begun, the publish runs to its own bound (XaddTimeout or
//     ENGINE_SEND_TIMEOUT) whatever becomes of ctx, so that a caller that
//     hangs up still gets a known outcome;
//   - domain.ErrBusUnavailable when the command was provably not sent: the
//     reader has no start id yet, the bus is stopped, the connection could
//     not be established, the client is closing, or Redis answered the XADD
//     with an error (it refused the command, for example OOM, WRONGTYPE,
//     READONLY on a demoted master, or in a cluster CLUSTERDOWN, TRYAGAIN or
//     a MOVED rueidis did not follow);
//   - domain.ErrSendUnknown when the outcome is unknown: the connection
//     broke or the timeout (or ctx) fired after the XADD may have been
//     written; or, with ENGINE_DURABLE_SEND, when the command is in the
//     stream but not proven durable (the WAIT timed out or failed).
//
// After ErrSendUnknown the command may reach the Engine, so its reply, if
// any, counts as late, not unknown. Both sentinels are wrapped with the Redis
// error as text only, so that errors.Is sees the domain meaning and nothing
// else.
func (b *Bus) Send(ctx context.Context, cmd domain.Command) (<-chan domain.Reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // the caller's own context error: nothing to add
	}
	if b.stopped.Load() || !b.start.started() {
		b.metrics.NotSent()
		why := "reply reader has no start id yet"
		if b.stopped.Load() {
			why = "bus stopped"
		}
		return nil, fmt.Errorf("%s: %w", why, domain.ErrBusUnavailable)
	}
	replies, err := b.table.Register(cmd.RequestID)
	if err != nil {
		b.metrics.NotSent()
		return nil, fmt.Errorf("register the reply's waiter: %w: %v", domain.ErrBusUnavailable, err)
	}

	span := b.startSend(ctx, &cmd)
	payload := protocol.EncodeCommand(cmd, b.replyStream)
	xadd := b.client.B().Xadd().Key(b.cfg.RequestStream).
		Maxlen().Almost().Threshold(b.maxLen).
		Id("*").FieldValue().FieldValue(protocol.Field, rueidis.BinaryString(payload)).Build()
	// From here the publish is not cancelled with ctx, only bounded by its
	// own timeout: a caller that hangs up while the XADD is in flight (the
	// command may already be in the stream) still learns whether it went out,
	// instead of an unknown outcome.
	var (
		id     string
		durErr error
	)
	switch {
	case b.durableMode():
		err, durErr = b.durableXadd(context.WithoutCancel(ctx), xadd)
	case b.batch != nil && b.table.Len() >= batchAbove:
		id, err = b.batch.send(xadd)
	default:
		id, err = b.client.Do(b.xaddBound.at(time.Now()), xadd).ToString()
	}
	span.sent(id)
	if err != nil {
		b.errs[opXadd].Inc()
		if notSent(err) {
			b.table.Forget(cmd.RequestID)
			b.metrics.NotSent()
			return nil, span.fail(fmt.Errorf("xadd: %w: %v", domain.ErrBusUnavailable, err))
		}
		b.table.Abandon(cmd.RequestID) // it may have been sent: a reply would be late, not unknown
		b.metrics.SendUnknown()
		return nil, span.fail(fmt.Errorf("xadd: %w: %v", domain.ErrSendUnknown, err))
	}
	b.metrics.Sent()
	if durErr != nil {
		b.table.Abandon(cmd.RequestID)
		return nil, span.fail(fmt.Errorf("xadd: in the stream but not proven durable: %w: %v", domain.ErrSendUnknown, durErr))
	}
	span.end()
	return replies, nil
}

// notSent reports whether a command that failed with err provably did not
// reach Redis, from what rueidis v1.0.79 returns:
//   - a Redis error reply (*rueidis.RedisError): Redis refused the command;
//   - rueidis.ErrClosing: the client is closed, nothing more is written.
//     (Close lets commands already written finish first, unless Redis stays
//     silent for a second; the service closes the client only after the bus
//     and the HTTP server have stopped, so no Send is in flight then.)
//   - a dial error: a connection that could not be made (pool.go and mux.go
//     hand the dial error to every command that waited for the connection).
//     Clients from Dial mark these (dialError); for others a *net.OpError
//     with Op "dial" is recognised.
//
// Anything else - io.EOF, a reset, a deadline or ctx error after the command
// was queued, or a failed HELLO after a successful dial - may have followed
// the write, so the outcome is unknown.
func notSent(err error) bool {
	if _, ok := rueidis.IsRedisErr(err); ok {
		return true
	}
	if errors.Is(err, rueidis.ErrClosing) {
		return true
	}
	var de *dialError
	if errors.As(err, &de) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// Abandon stops waiting for the reply to requestID; a later reply counts as
// late. It reports true when the reply reader is not connected right now,
// so replies may have been lost; a reconnect that completes within the wait
// loses nothing, since the reader resumes after the last entry it saw.
func (b *Bus) Abandon(requestID string) bool {
	b.table.Abandon(requestID)
	return !b.connected.Load()
}

// Waiting reports how many requests are waiting for a reply.
func (b *Bus) Waiting() int { return b.table.Len() }

// Ready returns nil when Redis answers PING and the reply reader has its start
// id and is connected, and, for a per-instance reply stream, the stream
// exists or was recreated; otherwise an error wrapping
// domain.ErrBusUnavailable that says why. ctx bounds the PING, as does the
// XADD timeout.
func (b *Bus) Ready(ctx context.Context) error {
	if b.stopped.Load() {
		return fmt.Errorf("bus stopped: %w", domain.ErrBusUnavailable)
	}
	if st, err := b.start.get(); st == readerRefused {
		return fmt.Errorf("%w: %v", domain.ErrBusUnavailable, err)
	}
	pctx, cancel := context.WithTimeout(ctx, b.set.xaddTimeout)
	defer cancel()
	if err := b.client.Do(pctx, b.client.B().Ping().Build()).Error(); err != nil {
		b.errs[opPing].Inc()
		return fmt.Errorf("ping redis: %w: %v", domain.ErrBusUnavailable, err)
	}
	if !b.start.started() {
		return fmt.Errorf("reply reader has no start id yet: %w", domain.ErrBusUnavailable)
	}
	if errp := b.streamErr.Load(); errp != nil { // first: the reader fails for the same cause
		return fmt.Errorf("reply stream %s is missing and could not be recreated: %w: %v",
			b.replyStream, domain.ErrBusUnavailable, *errp)
	}
	if !b.connected.Load() {
		return fmt.Errorf("reply reader is reconnecting: %w", domain.ErrBusUnavailable)
	}
	return nil
}
