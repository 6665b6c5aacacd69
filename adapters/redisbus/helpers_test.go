package redisbus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/internal/setting"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// rueidis.NewClient probes for a cluster first; when the probe's
		// connection closes, the discarded cluster client schedules a topology
		// refresh that sleeps up to about a second before it finds itself
		// closed (singleflight.go, DelayDo). Bounded, and not ours.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"),
	)
}

// fixture is a bus on a test's own redis-server, with a test Engine.
type fixture struct {
	redis  *testenv.Redis
	bus    *Bus
	stop   func()
	reg    *prometheus.Registry
	cfg    Config
	engine *redisEngine
}

type fixtureOption func(*Config, *settings)

// testSettings are the defaults with a faster first retry; everything else is
// what production runs.
func testSettings(cfg Config) settings {
	s := defaultSettings(cfg)
	s.backoffMin = 10 * time.Millisecond
	return s
}

func engineConfig(t testing.TB) Config {
	prefix := fmt.Sprintf("%s:%d", strings.ReplaceAll(t.Name(), "/", ":"), rand.Int64())
	return Config{
		RequestStream: prefix + ":requests",
		ReplyStream:   prefix + ":replies",
		ReplyTimeout:  5 * time.Second,
		RequestMaxLen: 100_000,
		MaxWaiting:    20_000,
	}
}

// newFixture starts a bus on r (through Dial, as the service does) and waits
// until its reader has its start id.
func newFixture(t testing.TB, r *testenv.Redis, opts ...fixtureOption) *fixture {
	t.Helper()
	f := newIdleFixture(t, r, opts...)
	f.waitStarted(t)
	return f
}

func (f *fixture) waitStarted(t testing.TB) {
	t.Helper()
	select {
	case <-f.bus.start.ready:
	case <-time.After(5 * time.Second):
		t.Fatal("reply reader did not start")
	}
}

// newIdleFixture is newFixture without waiting for the reader.
func newIdleFixture(t testing.TB, r *testenv.Redis, opts ...fixtureOption) *fixture {
	t.Helper()
	return newClientFixture(t, r, dial(t, r.URL()), opts...)
}

// newClientFixture is newIdleFixture on a given client.
func newClientFixture(t testing.TB, r *testenv.Redis, client rueidis.Client, opts ...fixtureOption) *fixture {
	t.Helper()
	return newLoggedFixture(t, r, client, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), opts...)
}

// newLoggedFixture is newClientFixture with the bus logging to log.
func newLoggedFixture(t testing.TB, r *testenv.Redis, client rueidis.Client, log *zap.Logger, opts ...fixtureOption) *fixture {
	t.Helper()
	cfg := engineConfig(t)
	set := testSettings(cfg)
	for _, o := range opts {
		o(&cfg, &set)
	}
	reg := prometheus.NewRegistry()
	bus, stop, err := newBus(cfg, log, client, reg, set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop) // runs before the client's Close, registered earlier
	return &fixture{
		redis: r, bus: bus, stop: stop, reg: reg, cfg: cfg,
		engine: &redisEngine{redis: r, requests: cfg.RequestStream, replies: cfg.ReplyStreamName(), last: "0-0"},
	}
}

func dial(t testing.TB, url string) rueidis.Client {
	t.Helper()
	client, closeClient, err := Dial(ConnConfig{URL: setting.Secret(url)}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeClient)
	return client
}

func (f *fixture) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return testenv.Metric(t, f.reg, name, labels...)
}

func (f *fixture) replies(t *testing.T, result string) float64 {
	t.Helper()
	return f.metric(t, "ensure_user_engine_replies_total", "result", result)
}

// send sends a command for userID and fails the test on error.
func (f *fixture) send(t *testing.T, userID string) (domain.Command, <-chan domain.Reply) {
	t.Helper()
	cmd := newCommand(userID)
	replies, err := f.bus.Send(testContext(t), cmd)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return cmd, replies
}

// answer reads the next command on the request stream and replies to it.
func (f *fixture) answer(t *testing.T) protocol.Request {
	t.Helper()
	ctx := testContext(t)
	payload, err := f.engine.Next(ctx)
	if err != nil {
		t.Fatalf("no command: %v", err)
	}
	req, err := protocol.DecodeRequest(payload)
	if err != nil {
		t.Fatal(err)
	}
	err = f.engine.Reply(ctx, protocol.EncodeReply(protocol.Reply{
		Function: req.Function, RequestID: req.RequestID, Message: req.UserID, Status: domain.StatusOK,
	}))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// roundTrip sends one command, answers it (leaving other pending commands
// for later answers) and waits for the reply: proof that the whole path
// works, and that every reply written before has been handled.
func (f *fixture) roundTrip(t *testing.T) {
	t.Helper()
	ctx := testContext(t)
	cmd, replies := f.send(t, "round-trip")
	if _, err := f.engine.take(ctx, cmd.RequestID); err != nil {
		t.Fatalf("command %s not on the stream: %v", cmd.RequestID, err)
	}
	err := f.engine.Reply(ctx, protocol.EncodeReply(protocol.Reply{RequestID: cmd.RequestID, Message: "round-trip", Status: "ok"}))
	if err != nil {
		t.Fatal(err)
	}
	expectReply(t, replies, cmd.RequestID)
}

func expectReply(t *testing.T, replies <-chan domain.Reply, requestID string) domain.Reply {
	t.Helper()
	select {
	case r := <-replies:
		if r.RequestID != requestID {
			t.Fatalf("received the reply to %s, want %s", r.RequestID, requestID)
		}
		return r
	case <-testContext(t).Done():
		t.Fatalf("no reply to %s", requestID)
		return domain.Reply{}
	}
}

func expectNoReply(t *testing.T, replies <-chan domain.Reply) {
	t.Helper()
	select {
	case r := <-replies:
		t.Fatalf("received %+v, want nothing", r)
	default:
	}
}

func newCommand(userID string) domain.Command {
	return domain.Command{
		RequestID: domain.NewRequestID(),
		User:      domain.User{ID: userID, Email: "user@example.com"},
		SentAt:    time.Now().UTC(),
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// redisEngine is a test Engine over Redis: it reads the request stream with
// its own client and writes replies with XADD.
type redisEngine struct {
	redis             *testenv.Redis
	requests, replies string
	last              string
	buf               [][]byte
	reads             int64 // XREADs issued, to tell them from the bus's
}

func (e *redisEngine) Next(ctx context.Context) ([]byte, error) {
	for len(e.buf) == 0 {
		if err := e.fill(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	p := e.buf[0]
	e.buf = e.buf[1:]
	return p, nil
}

// take returns the command with requestID, leaving the others for Next.
func (e *redisEngine) take(ctx context.Context, requestID string) ([]byte, error) {
	for {
		for i, p := range e.buf {
			if req, _ := protocol.DecodeRequest(p); req.RequestID == requestID {
				e.buf = append(e.buf[:i], e.buf[i+1:]...)
				return p, nil
			}
		}
		if err := e.fill(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// fill reads what the request stream has after e.last into e.buf, blocking
// up to block. It retries reads that failed for a broken connection (tests
// kill connections); XREAD is idempotent.
func (e *redisEngine) fill(ctx context.Context, block time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := e.redis.Client()
	e.reads++
	streams, err := c.Do(ctx, c.B().Xread().Count(512).Block(block.Milliseconds()).
		Streams().Key(e.requests).Id(e.last).Build()).AsXReadSlices()
	if rueidis.IsRedisNil(err) {
		return nil
	}
	if _, isRedis := rueidis.IsRedisErr(err); err != nil && !isRedis && ctx.Err() == nil {
		return nil // a killed connection: the next read dials again
	}
	if err != nil {
		return err
	}
	for _, entry := range streams[e.requests] {
		e.last = entry.ID
		for _, fv := range entry.FieldValues {
			if fv.Field == protocol.Field {
				e.buf = append(e.buf, []byte(fv.Value))
			}
		}
	}
	return nil
}

func (e *redisEngine) Reply(ctx context.Context, payload []byte) error {
	return e.xadd(ctx, protocol.Field, string(payload))
}

// xadd appends an entry with the given field/value pairs to the reply stream.
func (e *redisEngine) xadd(ctx context.Context, fieldValues ...string) error {
	args := append([]string{"XADD", e.replies, "*"}, fieldValues...)
	if err := e.redis.Do(ctx, args...).Error(); err != nil {
		return fmt.Errorf("xadd reply: %w", err)
	}
	return nil
}

// sendUntil retries Send while Redis is recovering; Send errors during that
// window must be the domain's.
func (f *fixture) sendUntil(t *testing.T, userID string) (domain.Command, <-chan domain.Reply) {
	t.Helper()
	var (
		cmd     domain.Command
		replies <-chan domain.Reply
	)
	testenv.Eventually(t, 5*time.Second, "Send succeeds again", func() bool {
		var err error
		cmd = newCommand(userID)
		replies, err = f.bus.Send(testContext(t), cmd)
		if err != nil && !errors.Is(err, domain.ErrBusUnavailable) && !errors.Is(err, domain.ErrSendUnknown) {
			t.Fatalf("Send error %v is not a domain error", err)
		}
		return err == nil
	})
	return cmd, replies
}
