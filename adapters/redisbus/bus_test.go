package redisbus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/ports"
	"github.com/ensure-user/ensure-user/test/contract"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestEngineBusContract(t *testing.T) {
	r := testenv.StartRedis(t)
	contract.RunEngineBus(t, contract.EngineBusHarness{
		New: func(t *testing.T) (ports.EngineBus, contract.EngineSide) {
			f := newFixture(t, r)
			return f.bus, f.engine
		},
		Unreachable: func(t *testing.T) ports.EngineBus {
			url := fmt.Sprintf("redis://127.0.0.1:%d/0", testenv.FreeRedisPort(t))
			bus, stop, err := New(engineConfig(t), zap.NewNop(), dial(t, url), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			return bus
		},
		Stalling: func(t *testing.T) (ports.EngineBus, contract.EngineSide, func(), func()) {
			r.SkipIfEmbedded(t, "CLIENT PAUSE")
			f := newFixture(t, r, func(_ *Config, s *settings) { s.xaddTimeout = 200 * time.Millisecond })
			ctx := testContext(t)
			return f.bus, f.engine,
				func() { r.MustDo(ctx, "CLIENT", "PAUSE", "5000", "WRITE") },
				func() { r.MustDo(ctx, "CLIENT", "UNPAUSE") }
		},
	})
}

// TestEncodingInRedis checks the request entries exactly as Redis stores
// them (XRANGE): one per Send, each with one field, message, holding the
// protocol JSON byte for byte.
func TestEncodingInRedis(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t))
	ctx := testContext(t)
	var want []string
	for _, id := range []string{`quo"te`, `back\slash`, "ünïcødé-日本語-🙂", `<&>'`, `{"nested":"json"}`} {
		cmd := newCommand(id)
		cmd.User.Email = `"a\"b"@example.com`
		cmd.Trace.Parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		if _, err := f.bus.Send(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		want = append(want, string(protocol.EncodeCommand(cmd, f.cfg.ReplyStream)))
	}
	entries, err := f.redis.MustDo(ctx, "XRANGE", f.cfg.RequestStream, "-", "+").AsXRangeSlices()
	if err != nil || len(entries) != len(want) {
		t.Fatalf("XRANGE: %d entries, %v; want %d", len(entries), err, len(want))
	}
	for i, e := range entries {
		if fvs := e.FieldValues; len(fvs) != 1 || fvs[0].Field != "message" || fvs[0].Value != want[i] {
			t.Errorf("entry %d: %+v\nwant the single field message = %s", i, fvs, want[i])
		}
	}
}

// TestRequestStreamIsTrimmed checks MAXLEN ~ ENGINE_REQUEST_MAXLEN.
func TestRequestStreamIsTrimmed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t), func(c *Config, _ *settings) { c.RequestMaxLen = 100 })
	for i := range 1000 {
		cmd, _ := f.send(t, strconv.Itoa(i))
		f.bus.Abandon(cmd.RequestID)
	}
	n, err := f.redis.MustDo(testContext(t), "XLEN", f.cfg.RequestStream).AsInt64()
	if err != nil || n < 100 || n > 300 {
		t.Errorf("XLEN = %d, %v; want about 100", n, err)
	}
}

// TestThousandConcurrentSends: 1,000 requests in flight at once, answered by
// a test Engine in random order; each waiter gets its own reply.
func TestThousandConcurrentSends(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t))
	const n = 1000
	ctx := testContext(t)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := newCommand("user-" + strconv.Itoa(i))
			replies, err := f.bus.Send(ctx, cmd)
			if err != nil {
				t.Errorf("Send: %v", err)
				return
			}
			select {
			case r := <-replies:
				if r.RequestID != cmd.RequestID || r.Message != cmd.User.ID {
					t.Errorf("%s (%s) received %+v", cmd.RequestID, cmd.User.ID, r)
				}
			case <-ctx.Done():
				t.Errorf("%s: no reply", cmd.RequestID)
			}
		})
	}
	var reqs []protocol.Request
	for len(reqs) < n {
		p, err := f.engine.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := protocol.DecodeRequest(p)
		reqs = append(reqs, req)
	}
	rand.Shuffle(n, func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	c := f.redis.Client()
	cmds := make(rueidis.Commands, 0, n)
	for _, req := range reqs {
		payload := protocol.EncodeReply(protocol.Reply{Function: req.Function, RequestID: req.RequestID, Message: req.UserID, Status: "ok"})
		cmds = append(cmds, c.B().Xadd().Key(f.cfg.ReplyStream).Id("*").FieldValue().FieldValue("message", string(payload)).Build())
	}
	for _, res := range c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if got := f.replies(t, "delivered"); got != n {
		t.Errorf("delivered = %v, want %d", got, n)
	}
	if f.bus.Waiting() != 0 {
		t.Errorf("Waiting = %d after all replies", f.bus.Waiting())
	}
}

// TestCommandsPerRequest: at concurrency 64 against a batching Engine, each
// request costs exactly one XADD, and the reader needs at most 0.25 XREAD per
// request, as one read returns many replies.
func TestCommandsPerRequest(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "counts commands with INFO commandstats")
	f := newFixture(t, r)
	ctx := testContext(t)
	r.MustDo(ctx, "CONFIG", "RESETSTAT")

	const workers, perWorker = 64, 100
	total := workers * perWorker
	done := make(chan struct{})
	engineDone := make(chan int64)
	go func() { engineDone <- runBatchingEngine(ctx, f, done) }()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				cmd := newCommand(fmt.Sprintf("w%d-%d", w, i))
				replies, err := f.bus.Send(ctx, cmd)
				if err != nil {
					t.Errorf("Send: %v", err)
					return
				}
				select {
				case <-replies:
				case <-ctx.Done():
					t.Error("no reply")
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	engineReads := <-engineDone

	xadds := r.RedisCommandCalls(ctx, "xadd") - int64(total) // minus the Engine's reply XADDs
	xreads := r.RedisCommandCalls(ctx, "xread") - engineReads
	t.Logf("%d requests: %d XADD, %d XREAD by the bus (%.3f per request)", total, xadds, xreads, float64(xreads)/float64(total))
	if xadds != int64(total) {
		t.Errorf("bus XADDs = %d, want exactly %d", xadds, total)
	}
	if ratio := float64(xreads) / float64(total); ratio > 0.25 {
		t.Errorf("bus XREADs per request = %.3f, want <= 0.25", ratio)
	}
}

// runBatchingEngine answers commands as a real Engine would: it reads them in
// batches and writes each batch's replies in one pipeline. It returns the
// number of XREADs it issued.
func runBatchingEngine(ctx context.Context, f *fixture, done <-chan struct{}) int64 {
	e := &redisEngine{redis: f.redis, requests: f.cfg.RequestStream, replies: f.cfg.ReplyStream, last: "0-0"}
	c := f.redis.Client()
	for {
		select {
		case <-done:
			return e.reads
		default:
		}
		if err := e.fill(ctx, 20*time.Millisecond); err != nil {
			return e.reads
		}
		if len(e.buf) == 0 {
			continue
		}
		cmds := make(rueidis.Commands, 0, len(e.buf))
		for _, p := range e.buf {
			req, _ := protocol.DecodeRequest(p)
			reply := protocol.EncodeReply(protocol.Reply{Function: req.Function, RequestID: req.RequestID, Message: req.UserID, Status: "ok"})
			cmds = append(cmds, c.B().Xadd().Key(f.cfg.ReplyStream).Id("*").FieldValue().FieldValue("message", string(reply)).Build())
		}
		e.buf = e.buf[:0]
		c.DoMulti(ctx, cmds...)
	}
}

// TestRedisKilled: with Redis gone, Send fails fast with ErrBusUnavailable
// (nothing sent), Abandon reports replies may be lost, Ready says why; and
// nothing panics or leaks (goleak in TestMain).
func TestRedisKilled(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	f := newFixture(t, r)
	f.roundTrip(t)
	r.Kill()

	ctx := testContext(t)
	testenv.Eventually(t, 5*time.Second, "reader notices", func() bool { return !f.bus.connected.Load() })
	deadline := time.Now().Add(time.Second)
	for {
		start := time.Now()
		_, err := f.bus.Send(ctx, newCommand("user-1"))
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Fatalf("Send took %s with Redis down", elapsed)
		}
		if errors.Is(err, domain.ErrBusUnavailable) {
			break
		}
		// A connection that died an instant ago may still take the write:
		// its outcome is honestly unknown.
		if !errors.Is(err, domain.ErrSendUnknown) {
			t.Fatalf("Send = %v, want ErrBusUnavailable", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("Send never reported ErrBusUnavailable")
		}
	}
	if !f.bus.Abandon("any") {
		t.Error("Abandon while the reader is disconnected must report replies may be lost")
	}
	if err := f.bus.Ready(ctx); !errors.Is(err, domain.ErrBusUnavailable) {
		t.Errorf("Ready = %v, want ErrBusUnavailable", err)
	}
	if got := f.metric(t, "ensure_user_engine_reader_connected"); got != 0 {
		t.Errorf("reader connected = %v", got)
	}
	if got := f.metric(t, "ensure_user_engine_send_errors_total", "kind", "not_sent"); got < 1 {
		t.Errorf("not_sent = %v", got)
	}
}

// TestRestartResumesFromLastID: Redis restarts (same port, data kept); a
// reply written while the reader is still reconnecting reaches its waiter,
// because the reader resumes after the last id it saw.
func TestRestartResumesFromLastID(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.WithRedisPersistence())
	// A slow second retry keeps the reader away while the reply is written.
	f := newFixture(t, r, func(_ *Config, s *settings) { s.backoffMin = 2 * time.Second })
	f.roundTrip(t)
	cmd, replies := f.send(t, "user-1")
	if _, err := f.engine.Next(testContext(t)); err != nil {
		t.Fatal(err)
	}

	r.Kill()
	testenv.Eventually(t, 5*time.Second, "reader notices", func() bool { return !f.bus.connected.Load() })
	r.Restart()
	err := f.engine.Reply(testContext(t), protocol.EncodeReply(protocol.Reply{RequestID: cmd.RequestID, Message: "user-1", Status: "ok"}))
	if err != nil {
		t.Fatal(err)
	}
	if f.bus.connected.Load() {
		t.Fatal("reader reconnected before the reply was written; the test proves nothing")
	}
	expectReply(t, replies, cmd.RequestID)
	f.roundTrip(t)
	if err := f.bus.Ready(testContext(t)); err != nil {
		t.Errorf("Ready after restart = %v", err)
	}
}

// TestReaderConnectionKilled: CLIENT KILL of the reader's connection, in the
// middle of its blocking XREAD; replies keep flowing, including one written
// right after the kill.
func TestReaderConnectionKilled(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "CLIENT LIST and CLIENT KILL")
	f := newFixture(t, r)
	f.roundTrip(t)
	ctx := testContext(t)

	cmd, replies := f.send(t, "user-1")
	var readerID string
	testenv.Eventually(t, 5*time.Second, "reader blocked in XREAD", func() bool {
		for _, c := range r.RedisClients(ctx) {
			if c["name"] == ClientName && c["cmd"] == "xread" {
				readerID = c["id"]
				return true
			}
		}
		return false
	})
	r.MustDo(ctx, "CLIENT", "KILL", "ID", readerID)
	f.answer(t)
	expectReply(t, replies, cmd.RequestID)
	testenv.Eventually(t, 5*time.Second, "xread error counted", func() bool {
		return f.metric(t, "ensure_user_redis_errors_total", "op", "xread") >= 1
	})
	f.roundTrip(t)
}

// TestAllConnectionsKilled: CLIENT KILL TYPE normal drops every connection,
// the publishing ones too; the bus recovers by itself.
func TestAllConnectionsKilled(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "CLIENT KILL")
	f := newFixture(t, r)
	f.roundTrip(t)
	r.MustDo(testContext(t), "CLIENT", "KILL", "TYPE", "normal") // our own raw client too
	cmd, replies := f.sendUntil(t, "user-1")
	f.answer(t)
	expectReply(t, replies, cmd.RequestID)
}

// TestReplyStreamDeletedAndRecreated: the reply stream disappears under the
// reader and comes back with ids below the last one the reader saw (as after
// a clock step back); the reader notices when idle and reads the new stream
// from its start, so both replies reach their requests and no other.
func TestReplyStreamDeletedAndRecreated(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t), func(_ *Config, s *settings) { s.block = 200 * time.Millisecond })
	ctx := testContext(t)
	f.roundTrip(t)
	a, aReplies := f.send(t, "user-a")
	b, bReplies := f.send(t, "user-b")
	f.redis.MustDo(ctx, "DEL", f.cfg.ReplyStream)
	reply := protocol.EncodeReply(protocol.Reply{RequestID: a.RequestID, Message: "user-a", Status: "ok"})
	f.redis.MustDo(ctx, "XADD", f.cfg.ReplyStream, "1-1", "message", string(reply))
	expectReply(t, aReplies, a.RequestID)
	expectNoReply(t, bReplies)
	reply = protocol.EncodeReply(protocol.Reply{RequestID: b.RequestID, Message: "user-b", Status: "ok"})
	f.redis.MustDo(ctx, "XADD", f.cfg.ReplyStream, "*", "message", string(reply))
	expectReply(t, bReplies, b.RequestID)
	f.roundTrip(t)
	if got := f.replies(t, "delivered"); got != 4 {
		t.Errorf("delivered = %v, want 4", got)
	}
}

func TestIDLess(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"1-1", "1-2", true}, {"1-2", "1-1", false}, {"9-0", "10-0", true}, {"5-5", "5-5", false}, {"0-0", "1-0", true},
	} {
		if got := idLess(tt.a, tt.b); got != tt.want {
			t.Errorf("idLess(%s, %s) = %v", tt.a, tt.b, got)
		}
	}
}

// TestJunkIsSkippedAndCounted: entries that are not JSON, lack requestId or
// the message field, or are 1 MiB long are skipped and counted as malformed;
// replies nobody here sent are counted as unknown; none is delivered.
func TestJunkIsSkippedAndCounted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t))
	ctx := testContext(t)
	cmd, replies := f.send(t, "user-1")
	huge := `{"requestId":"` + cmd.RequestID + `","message":"` + strings.Repeat("x", 1<<20) + `","status":"ok"}`
	for _, fv := range [][]string{
		{"message", "not json"},
		{"message", `{"message":"no request id","status":"ok"}`},
		// No message field.
		{"other", `{"requestId":"` + cmd.RequestID + `"}`},
		// 1 MiB, even though it names a waiting request.
		{"message", huge},
		{"message", `{"requestId":"` + domain.NewRequestID() + `","message":"not ours"}`},
	} {
		if err := f.engine.xadd(ctx, fv...); err != nil {
			t.Fatal(err)
		}
	}
	f.roundTrip(t)
	expectNoReply(t, replies)
	if got := f.replies(t, "malformed"); got != 4 {
		t.Errorf("malformed = %v, want 4", got)
	}
	if got := f.replies(t, "unknown"); got != 1 {
		t.Errorf("unknown = %v, want 1", got)
	}
	f.answer(t)
	if r := expectReply(t, replies, cmd.RequestID); r.Message != "user-1" {
		t.Errorf("received %+v", r)
	}
}

// TestLateAndDuplicateReplies are counted as late and reach nobody.
func TestLateAndDuplicateReplies(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t))
	ctx := testContext(t)
	abandoned, abandonedReplies := f.send(t, "user-1")
	answered, answeredReplies := f.send(t, "user-2")
	f.bus.Abandon(abandoned.RequestID)
	for _, r := range []protocol.Reply{
		{RequestID: abandoned.RequestID, Message: "late"},
		{RequestID: answered.RequestID, Message: "first"},
		{RequestID: answered.RequestID, Message: "duplicate"},
	} {
		if err := f.engine.Reply(ctx, protocol.EncodeReply(r)); err != nil {
			t.Fatal(err)
		}
	}
	f.roundTrip(t)
	if r := expectReply(t, answeredReplies, answered.RequestID); r.Message != "first" {
		t.Errorf("received %+v, want the first reply", r)
	}
	expectNoReply(t, answeredReplies)
	expectNoReply(t, abandonedReplies)
	if got := f.replies(t, "late"); got != 2 {
		t.Errorf("late = %v, want 2", got)
	}
}

// TestStartsAfterExistingReplies: replies already in the stream when the bus
// starts are history, never delivered, even to a request with the same id.
func TestStartsAfterExistingReplies(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	cfg := engineConfig(t)
	cmd := newCommand("user-1")
	stale := protocol.EncodeReply(protocol.Reply{RequestID: cmd.RequestID, Message: "stale"})
	r.MustDo(testContext(t), "XADD", cfg.ReplyStream, "*", "message", string(stale))

	f := newFixture(t, r, func(c *Config, _ *settings) { *c = cfg })
	replies, err := f.bus.Send(testContext(t), cmd)
	if err != nil {
		t.Fatal(err)
	}
	f.roundTrip(t)
	expectNoReply(t, replies)
	f.answer(t)
	if got := expectReply(t, replies, cmd.RequestID); got.Message != "user-1" {
		t.Errorf("received %+v, want the fresh reply", got)
	}
}

// TestStartsWhileRedisIsDown: Dial and New succeed with Redis down; Send
// refuses until the reader has its start id, then works.
func TestStartsWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.Kill()
	f := newIdleFixture(t, r)
	if _, err := f.bus.Send(testContext(t), newCommand("u")); !errors.Is(err, domain.ErrBusUnavailable) {
		t.Fatalf("Send before start = %v, want ErrBusUnavailable", err)
	}
	if err := f.bus.Ready(testContext(t)); !errors.Is(err, domain.ErrBusUnavailable) {
		t.Errorf("Ready = %v, want ErrBusUnavailable", err)
	}
	r.Restart()
	select {
	case <-f.bus.start.ready:
	case <-testContext(t).Done():
		t.Fatal("reader never started")
	}
	f.roundTrip(t)
	if err := f.bus.Ready(testContext(t)); err != nil {
		t.Errorf("Ready = %v", err)
	}
}

// TestRedisRefusesXadd: a Redis error reply means the command was refused:
// ErrBusUnavailable, counted as not sent.
func TestRedisRefusesXadd(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t))
	f.redis.MustDo(testContext(t), "SET", f.cfg.RequestStream, "not a stream")
	_, err := f.bus.Send(testContext(t), newCommand("u"))
	if !errors.Is(err, domain.ErrBusUnavailable) || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Send = %v, want ErrBusUnavailable (WRONGTYPE)", err)
	}
	if f.bus.Waiting() != 0 {
		t.Errorf("a refused command still waits")
	}
	if got := f.metric(t, "ensure_user_engine_send_errors_total", "kind", "not_sent"); got != 1 {
		t.Errorf("not_sent = %v", got)
	}
}

// TestXaddTimeoutIsUnknown: Redis stalls writes past the XADD timeout; the
// command is then executed when Redis resumes, which is why the outcome must
// be reported as unknown (ErrSendUnknown), not as not sent.
func TestXaddTimeoutIsUnknown(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "CLIENT PAUSE")
	f := newFixture(t, r, func(_ *Config, s *settings) { s.xaddTimeout = 200 * time.Millisecond })
	ctx := testContext(t)
	r.MustDo(ctx, "CLIENT", "PAUSE", "3000", "WRITE")
	start := time.Now()
	_, err := f.bus.Send(ctx, newCommand("u"))
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Send took %s, want about the XADD timeout", elapsed)
	}
	if !errors.Is(err, domain.ErrSendUnknown) {
		t.Fatalf("Send = %v, want ErrSendUnknown", err)
	}
	r.MustDo(ctx, "CLIENT", "UNPAUSE")
	if _, err := f.engine.Next(ctx); err != nil {
		t.Errorf("the timed-out command never reached the stream: %v", err)
	}
	if got := f.metric(t, "ensure_user_engine_send_errors_total", "kind", "unknown"); got != 1 {
		t.Errorf("unknown = %v", got)
	}
}

// TestStalledServer: Redis stops answering everything; the reader gives up
// its read at its own deadline instead of hanging, and recovers afterwards.
func TestStalledServer(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "CLIENT PAUSE")
	f := newFixture(t, r, func(_ *Config, s *settings) {
		s.block, s.readMargin = 200*time.Millisecond, 200*time.Millisecond
	})
	f.roundTrip(t)
	start := time.Now()
	r.MustDo(testContext(t), "CLIENT", "PAUSE", "2000", "ALL")
	testenv.Eventually(t, 2*time.Second, "reader gives up the stalled read", func() bool { return !f.bus.connected.Load() })
	if elapsed := time.Since(start); elapsed > 1500*time.Millisecond {
		t.Errorf("reader noticed after %s, want within its deadline (400ms) plus a margin", elapsed)
	}
	f.sendUntil(t, "user-1") // once the pause ends
	f.roundTrip(t)
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{RequestStream: "", ReplyStream: "r", RequestMaxLen: 1},
		{RequestStream: "s", ReplyStream: "s", RequestMaxLen: 1},
		{RequestStream: "s", ReplyStream: "r", RequestMaxLen: 0},
		{RequestStream: "s", ReplyStream: "r", RequestMaxLen: 1, DurableSend: "fsync"},
		{RequestStream: "s:x", ReplyStream: "s:{instance}", InstanceID: "x", RequestMaxLen: 1},
	} {
		if _, _, err := New(cfg, zap.NewNop(), nil, nil); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestStoppedBusRefuses(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t))
	f.stop()
	f.stop() // twice is harmless
	if _, err := f.bus.Send(testContext(t), newCommand("u")); !errors.Is(err, domain.ErrBusUnavailable) {
		t.Errorf("Send after stop = %v", err)
	}
	if err := f.bus.Ready(testContext(t)); !errors.Is(err, domain.ErrBusUnavailable) {
		t.Errorf("Ready after stop = %v", err)
	}
}

// TestSendTimeoutBound: ENGINE_SEND_TIMEOUT replaces the 2 s default bound of
// an XADD, and the reply timeout caps it either way.
func TestSendTimeoutBound(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		send, reply, want time.Duration
	}{
		{0, 5 * time.Second, XaddTimeout},
		{0, time.Second, time.Second},
		{10 * time.Second, 20 * time.Second, 10 * time.Second},
		{10 * time.Second, 3 * time.Second, 3 * time.Second},
		{100 * time.Millisecond, 5 * time.Second, 100 * time.Millisecond},
	} {
		if got := defaultSettings(Config{SendTimeout: tt.send, ReplyTimeout: tt.reply}).xaddTimeout; got != tt.want {
			t.Errorf("send %s, reply %s: XADD bound %s, want %s", tt.send, tt.reply, got, tt.want)
		}
	}
}

// TestSendOutlivesItsCaller: the caller hangs up while its XADD is held by
// Redis (CLIENT PAUSE WRITE). The publish is not cut short: once Redis runs
// the XADD, Send reports the command sent and returns its reply channel,
// instead of an unknown outcome for a command that is in the stream.
func TestSendOutlivesItsCaller(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "CLIENT PAUSE")
	f := newFixture(t, r)
	f.roundTrip(t)
	admin := testContext(t)
	r.MustDo(admin, "CLIENT", "PAUSE", "10000", "WRITE")
	t.Cleanup(func() { r.Do(context.Background(), "CLIENT", "UNPAUSE") })

	ctx, hangUp := context.WithCancel(context.Background())
	type sent struct {
		replies <-chan domain.Reply
		err     error
	}
	done := make(chan sent, 1)
	cmd := newCommand("leaver")
	go func() {
		replies, err := f.bus.Send(ctx, cmd)
		done <- sent{replies, err}
	}()
	testenv.Eventually(t, 10*time.Second, "the XADD is held by the pause", func() bool { return r.Holds(admin, "xadd") })
	hangUp()
	select {
	case s := <-done:
		t.Fatalf("Send returned (%v) while its XADD was still held", s.err)
	default:
	}
	r.MustDo(admin, "CLIENT", "UNPAUSE")
	s := <-done
	if s.err != nil {
		t.Fatalf("Send after its caller hung up = %v, want the command reported sent", s.err)
	}
	f.answer(t)
	expectReply(t, s.replies, cmd.RequestID)
	if got := f.metric(t, "ensure_user_engine_commands_sent_total"); got != 2 {
		t.Errorf("sent = %v, want 2 (the round trip and this one)", got)
	}
}
