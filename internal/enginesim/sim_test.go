package enginesim

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/redisbus"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/internal/refengine"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		e := startEngine(t, srv, cfg)
		first := srv.send(cfg, "user-1", cfg.ReplyStream)
		again := srv.send(cfg, "user-1", "") // no replyTo: the Engine's own stream
		got := byRequest(t, srv.waitReplies(cfg.ReplyStream, 2))
		want := map[string]protocol.Reply{
			first.RequestID: {Function: protocol.FunctionCreateUser, RequestID: first.RequestID, Message: "user-1", Status: domain.StatusOK},
			again.RequestID: {Function: protocol.FunctionCreateUser, RequestID: again.RequestID, Message: domain.LegacyAlreadyExists, Status: domain.StatusExists},
		}
		for id, w := range want {
			if got[id].Reply != w {
				t.Errorf("reply %+v, want %+v", got[id].Reply, w)
			}
		}
		eventually(t, "both acked", func() bool { return srv.pending(cfg) == 0 })
		if ok, exists := e.commands(t, ResultOK), e.commands(t, ResultExists); ok != 1 || exists != 1 {
			t.Errorf("commands ok %d exists %d, want 1 and 1", ok, exists)
		}
		if n := testenv.Metric(t, e.reg, "engine_sim_batch_size"); n < 1 {
			t.Errorf("batch_size has %v samples, want some", n)
		}
	})
}

// TestRepliesToReplyTo: the reply goes to the request's replyTo, an existing
// per-instance stream, and nowhere else.
func TestRepliesToReplyTo(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		instance := cfg.RequestStream + ":instance-7"
		srv.do("XGROUP", "CREATE", instance, "reader", "$", "MKSTREAM") // the instance's stream exists, empty
		startEngine(t, srv, cfg)
		cmd := srv.send(cfg, "user-1", instance)
		got := srv.waitReplies(instance, 1)
		if got[0].RequestID != cmd.RequestID || got[0].Message != "user-1" {
			t.Errorf("reply %+v, want user-1 for %s", got[0].Reply, cmd.RequestID)
		}
		if srv.exists(cfg.ReplyStream) {
			t.Errorf("the Engine's own reply stream was written: %+v", srv.replies(cfg.ReplyStream))
		}
	})
}

// TestVanishedReplyToIsNotRecreated: a replyTo stream that does not exist is
// not created (NOMKSTREAM), and the request is acked all the same.
func TestVanishedReplyToIsNotRecreated(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		gone := cfg.RequestStream + ":instance-gone"
		e := startEngine(t, srv, cfg)
		srv.send(cfg, "user-1", gone)
		eventually(t, "the request handled and acked", func() bool {
			return e.handled(t) == 1 && srv.pending(cfg) == 0
		})
		// A later request answered proves the first one's XADD has run.
		later := srv.send(cfg, "user-2", "")
		if r := srv.waitReplies(cfg.ReplyStream, 1); r[0].RequestID != later.RequestID {
			t.Errorf("reply to %s, want %s", r[0].RequestID, later.RequestID)
		}
		if srv.exists(gone) {
			t.Errorf("the vanished reply stream %s was recreated", gone)
		}
	})
}

// TestOwnReplyStreamIsCreated: replyTo naming the Engine's own reply stream,
// missing because no service created it, gets the reply: that stream is
// written without NOMKSTREAM.
func TestOwnReplyStreamIsCreated(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	startEngine(t, srv, cfg)
	cmd := srv.send(cfg, "user-1", cfg.ReplyStream)
	if r := srv.waitReplies(cfg.ReplyStream, 1); r[0].RequestID != cmd.RequestID {
		t.Errorf("reply to %s, want %s", r[0].RequestID, cmd.RequestID)
	}
}

// TestServiceBusRoundTrip runs the service's Redis bus against the runner,
// both on their default shared reply stream, which neither creates up front.
func TestServiceBusRoundTrip(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	bus, stop, err := redisbus.New(redisbus.Config{
		RequestStream: cfg.RequestStream, ReplyStream: cfg.ReplyStream,
		ReplyTimeout: 5 * time.Second, RequestMaxLen: 1000, MaxWaiting: 100,
	}, zap.NewNop(), dial(t, srv.url), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	startEngine(t, srv, cfg)
	ctx := testContext(t)
	eventually(t, "the bus is ready", func() bool { return bus.Ready(ctx) == nil })
	for i, want := range []string{domain.StatusOK, domain.StatusExists} {
		cmd := domain.Command{RequestID: domain.NewRequestID(), User: domain.User{ID: "u", Email: "u@example.com"}, SentAt: time.Now()}
		replies, err := bus.Send(ctx, cmd)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-replies:
			if r.Status != want {
				t.Errorf("call %d: status %q, want %q", i, r.Status, want)
			}
		case <-ctx.Done():
			t.Fatalf("call %d: no reply", i)
		}
	}
}

func TestLegacyRepliesHaveNoStatus(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		cfg.Legacy = true
		e := startEngine(t, srv, cfg)
		srv.send(cfg, "user-1", "")
		srv.send(cfg, "user-1", "")
		got := srv.waitReplies(cfg.ReplyStream, 2)
		for i, want := range []string{"user-1", domain.LegacyAlreadyExists} {
			if _, has := got[i].raw["status"]; has || got[i].Message != want {
				t.Errorf("reply %d: %v, want message %q and no status field", i, got[i].raw, want)
			}
		}
		if ok, exists := e.commands(t, ResultOK), e.commands(t, ResultExists); ok != 1 || exists != 1 {
			t.Errorf("commands ok %d exists %d, want 1 and 1: the result is known without a status", ok, exists)
		}
	})
}

func TestErrorRatioOneFailsEverything(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	cfg.ErrorRatio = 1
	e := startEngine(t, srv, cfg)
	const n = 50
	srv.sendMany(cfg, n, "")
	for _, r := range srv.waitReplies(cfg.ReplyStream, n) {
		if r.Status != domain.StatusError || r.Message != refengine.MessageError {
			t.Fatalf("reply %+v, want status error", r.Reply)
		}
	}
	if got := e.commands(t, ResultError); got != n {
		t.Errorf("commands error %d, want %d", got, n)
	}
	if card, _ := srv.do("SCARD", cfg.RequestStream+UsersKeySuffix).AsInt64(); card != 0 {
		t.Errorf("%d users stored, want none: a failed request touches no store", card)
	}
}

func TestDropRatioOneAcksWithoutReplies(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	cfg.DropRatio = 1
	e := startEngine(t, srv, cfg)
	const n = 50
	srv.sendMany(cfg, n, "")
	eventually(t, "all dropped and acked", func() bool {
		return e.commands(t, ResultDropped) == n && srv.pending(cfg) == 0
	})
	if srv.exists(cfg.ReplyStream) {
		t.Errorf("replies were written: %+v", srv.replies(cfg.ReplyStream))
	}
	if card, _ := srv.do("SCARD", cfg.RequestStream+UsersKeySuffix).AsInt64(); card != n {
		t.Errorf("%d users stored, want %d: a dropped reply's work is done", card, n)
	}
}

// TestDelayRange: random delays reorder the replies, do not add up (each
// reply waits on its own), and every reply carries its request's id.
func TestDelayRange(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	cfg.ReplyDelay, cfg.ReplyDelayMax = 100*time.Millisecond, 400*time.Millisecond
	const n = 60
	sent := srv.sendMany(cfg, n, "")
	start := time.Now()
	startEngine(t, srv, cfg)
	got := srv.waitReplies(cfg.ReplyStream, n)
	elapsed := time.Since(start)

	answered := make([]string, len(got))
	for i, r := range got {
		answered[i] = r.RequestID
	}
	byRequest(t, got)
	if slices.Equal(answered, sent) {
		t.Error("replies came in request order; random delays should reorder them")
	}
	slices.Sort(answered)
	slices.Sort(sent)
	if !slices.Equal(answered, sent) {
		t.Errorf("answered request ids differ from the sent ones")
	}
	// In series the delays would add up to about n*250ms = 15s.
	if elapsed > 3*time.Second {
		t.Errorf("%d replies took %s: delays are serialised", n, elapsed)
	}
	eventually(t, "all acked", func() bool { return srv.pending(cfg) == 0 })
}

// TestAckFollowsReply: an entry stays pending while its reply waits.
func TestAckFollowsReply(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	cfg.ReplyDelay = time.Second
	const n = 10
	srv.sendMany(cfg, n, "")
	startEngine(t, srv, cfg)
	eventually(t, "all read", func() bool { return srv.pending(cfg) == n })
	if srv.exists(cfg.ReplyStream) {
		t.Fatalf("replies before their delay: %+v", srv.replies(cfg.ReplyStream))
	}
	srv.waitReplies(cfg.ReplyStream, n)
	eventually(t, "all acked", func() bool { return srv.pending(cfg) == 0 })
}

// TestShutdownFinishesBatchInHand: on cancel, replies still waiting for
// their delay are written at once and acked, and Run returns promptly.
func TestShutdownFinishesBatchInHand(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		cfg.ReplyDelay, cfg.ClaimIdle = time.Hour, 2*time.Hour
		const n = 10
		srv.sendMany(cfg, n, "")
		e := startEngine(t, srv, cfg)
		eventually(t, "all read", func() bool { return srv.pending(cfg) == n })
		begin := time.Now()
		if err := e.stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if d := time.Since(begin); d > 3*time.Second {
			t.Errorf("Run took %s to return", d)
		}
		if got := len(srv.replies(cfg.ReplyStream)); got != n {
			t.Errorf("%d replies after Run returned, want %d", got, n)
		}
		if p := srv.pending(cfg); p != 0 {
			t.Errorf("%d entries still pending after Run returned", p)
		}
	})
}

// TestInstancesShareTheGroup: two instances in one group answer every
// command exactly once.
func TestInstancesShareTheGroup(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	cfg.ReadCount = 16
	a := startEngine(t, srv, cfg)
	cfg.Consumer = "c2"
	b := startEngine(t, srv, cfg)
	const n = 2000
	sent := srv.sendMany(cfg, n, "")
	eventually(t, "every command handled and acked", func() bool {
		return a.handled(t)+b.handled(t) >= n && srv.pending(cfg) == 0
	})
	got := byRequest(t, srv.waitReplies(cfg.ReplyStream, n))
	if len(got) != n || a.handled(t)+b.handled(t) != n {
		t.Errorf("%d replies, %d+%d handled; want exactly %d", len(got), a.handled(t), b.handled(t), n)
	}
	for _, id := range sent {
		if got[id].Status != domain.StatusOK {
			t.Fatalf("request %s: %+v, want ok", id, got[id].Reply)
		}
	}
	t.Logf("instance 1 handled %d, instance 2 handled %d", a.handled(t), b.handled(t))
}

// TestClaimsFromDeadConsumer: entries a consumer read and never acked (it
// crashed) are claimed once idle, and answered.
func TestClaimsFromDeadConsumer(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		cfg.ClaimIdle = 100 * time.Millisecond
		srv.createGroup(cfg)
		const n = 20
		sent := srv.sendMany(cfg, n, "")
		if got := srv.readAsConsumer(cfg, "dead", n); got != n {
			t.Fatalf("the dead consumer read %d entries, want %d", got, n)
		}
		e := startEngine(t, srv, cfg)
		got := byRequest(t, srv.waitReplies(cfg.ReplyStream, n))
		for _, id := range sent {
			if _, ok := got[id]; !ok {
				t.Errorf("request %s not answered", id)
			}
		}
		eventually(t, "all acked", func() bool { return srv.pending(cfg) == 0 })
		if c := testenv.Metric(t, e.reg, "engine_sim_claimed_total"); c < n {
			t.Errorf("claimed_total %v, want at least %d", c, n)
		}
	})
}

// TestCrashedRunnerIsTakenOver: a runner that loses Redis for good (a
// crash, as far as Redis can tell) after reading leaves nothing behind that
// another instance does not answer.
func TestCrashedRunnerIsTakenOver(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	cfg.ReplyDelay, cfg.ClaimIdle = time.Hour, 2*time.Hour
	const n = 20
	sent := srv.sendMany(cfg, n, "")

	line := newPartition(t, srv.addr)
	doomed := startEngine(t, &server{url: line.url, t: t}, cfg)
	eventually(t, "the doomed runner read everything", func() bool { return srv.pending(cfg) == n })
	line.Cut()
	if err := doomed.stop(); err != nil {
		t.Fatal(err)
	}
	if exists, pending := srv.exists(cfg.ReplyStream), srv.pending(cfg); exists || pending != n {
		t.Fatalf("the crashed runner wrote replies (%v) or acked (%d pending, want %d)", exists, pending, n)
	}

	cfg.Consumer, cfg.ReplyDelay, cfg.ClaimIdle = "c2", 0, 100*time.Millisecond
	startEngine(t, srv, cfg)
	got := byRequest(t, srv.waitReplies(cfg.ReplyStream, n))
	for _, id := range sent {
		if _, ok := got[id]; !ok {
			t.Errorf("request %s not answered", id)
		}
	}
	eventually(t, "all acked", func() bool { return srv.pending(cfg) == 0 })
}

// TestRestartResumesOwnPendingList: a consumer that read entries and
// crashed answers them when it restarts under the same name, at once,
// without waiting for ENGINE_CLAIM_IDLE.
func TestRestartResumesOwnPendingList(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		cfg.ClaimIdle = time.Hour
		srv.createGroup(cfg)
		const n = 20
		srv.sendMany(cfg, n, "")
		srv.readAsConsumer(cfg, cfg.Consumer, n) // the previous life of c1
		e := startEngine(t, srv, cfg)
		srv.waitReplies(cfg.ReplyStream, n)
		eventually(t, "all acked", func() bool { return srv.pending(cfg) == 0 })
		if c := testenv.Metric(t, e.reg, "engine_sim_claimed_total"); c != 0 {
			t.Errorf("claimed_total %v, want 0: the own pending list needs no claim", c)
		}
	})
}

// TestDeletedPendingEntryIsAcked: an entry trimmed away while pending comes
// back without fields; it is acked and counted malformed, not retried.
func TestDeletedPendingEntryIsAcked(t *testing.T) {
	t.Parallel()
	srv := realRedis(t) // miniredis skips such entries and keeps them pending
	cfg := testConfig(t)
	cfg.ClaimIdle = time.Hour
	srv.createGroup(cfg)
	srv.sendMany(cfg, 3, "")
	srv.readAsConsumer(cfg, cfg.Consumer, 3)
	entries, _ := srv.do("XRANGE", cfg.RequestStream, "-", "+").AsXRangeSlices()
	srv.do("XDEL", cfg.RequestStream, entries[1].ID)
	e := startEngine(t, srv, cfg)
	srv.waitReplies(cfg.ReplyStream, 2)
	eventually(t, "all acked", func() bool { return srv.pending(cfg) == 0 })
	if m := e.commands(t, ResultMalformed); m != 1 {
		t.Errorf("malformed %d, want 1", m)
	}
}

func TestRestartRemembersUsers(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	first := startEngine(t, srv, cfg)
	srv.send(cfg, "user-1", "")
	srv.waitReplies(cfg.ReplyStream, 1)
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	cfg.Consumer = "c2" // a new process
	startEngine(t, srv, cfg)
	cmd := srv.send(cfg, "user-1", "")
	got := byRequest(t, srv.waitReplies(cfg.ReplyStream, 2))
	if r := got[cmd.RequestID]; r.Status != domain.StatusExists {
		t.Errorf("after a restart: %+v, want exists", r.Reply)
	}
}

// TestCommandsBeforeStartAreProcessed: the group is created at id 0, so
// what the service wrote while no Engine ran is answered.
func TestCommandsBeforeStartAreProcessed(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		const n = 600 // more than one batch
		sent := srv.sendMany(cfg, n, "")
		startEngine(t, srv, cfg)
		got := byRequest(t, srv.waitReplies(cfg.ReplyStream, n))
		for _, id := range sent {
			if got[id].Status != domain.StatusOK {
				t.Fatalf("request %s: %+v, want ok", id, got[id].Reply)
			}
		}
	})
}

func TestMalformedEntriesAreAckedAndSkipped(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		e := startEngine(t, srv, cfg)
		badReplyTo := protocol.EncodeCommand(domain.Command{RequestID: "r-loop", User: domain.User{ID: "u"}}, cfg.RequestStream)
		for _, fv := range [][]string{
			{"other", "x"},
			{protocol.Field, "not json"},
			{protocol.Field, `{"function":"createUser","userId":"u"}`}, // no requestId
			{protocol.Field, `["an","array"]`},
			{protocol.Field, string(badReplyTo)},
		} {
			srv.do(append([]string{"XADD", cfg.RequestStream, "*"}, fv...)...)
		}
		good := srv.send(cfg, "user-1", "")
		if r := srv.waitReplies(cfg.ReplyStream, 1); r[0].RequestID != good.RequestID {
			t.Errorf("reply to %s, want %s", r[0].RequestID, good.RequestID)
		}
		eventually(t, "everything acked", func() bool { return e.handled(t) == 6 && srv.pending(cfg) == 0 })
		if m := e.commands(t, ResultMalformed); m != 5 {
			t.Errorf("malformed %d, want 5", m)
		}
		if l := srv.length(cfg.RequestStream); l != 6 {
			t.Errorf("request stream has %d entries, want the 6 sent: nothing is written back to it", l)
		}
	})
}

func TestUnsupportedFunctionIsAnError(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	e := startEngine(t, srv, cfg)
	srv.do("XADD", cfg.RequestStream, "*", protocol.Field, `{"function":"deleteUser","requestId":"r1","userId":"u"}`)
	r := srv.waitReplies(cfg.ReplyStream, 1)[0]
	if r.RequestID != "r1" || r.Status != domain.StatusError || r.Message != refengine.MessageUnsupportedFunction {
		t.Errorf("reply %+v, want an unsupported-function error", r.Reply)
	}
	if u := e.commands(t, ResultUnsupported); u != 1 {
		t.Errorf("unsupported %d, want 1", u)
	}
}

// TestGroupRecreatedAfterStreamDeleted: deleting the request stream (and its
// group) under a running Engine does not stop it.
func TestGroupRecreatedAfterStreamDeleted(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	startEngine(t, srv, cfg)
	srv.send(cfg, "user-1", "")
	srv.waitReplies(cfg.ReplyStream, 1)
	srv.do("DEL", cfg.RequestStream)
	cmd := srv.send(cfg, "user-2", "")
	got := byRequest(t, srv.waitReplies(cfg.ReplyStream, 2))
	if got[cmd.RequestID].Status != domain.StatusOK {
		t.Errorf("after the stream was deleted: %+v, want ok", got[cmd.RequestID].Reply)
	}
}

// TestSurvivesRedisRestart: a Redis restart (without persistence: the group
// is gone too) is ridden out.
func TestSurvivesRedisRestart(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "restarts a redis-server")
	srv := &server{url: r.URL(), raw: dial(t, r.URL()), t: t}
	cfg := testConfig(t)
	startEngine(t, srv, cfg)
	srv.send(cfg, "user-1", "")
	srv.waitReplies(cfg.ReplyStream, 1)
	r.Kill()
	r.Restart()
	srv.raw = dial(t, r.URL()) // the old client may not have noticed the kill yet
	cmd := srv.send(cfg, "user-2", "")
	if got := srv.waitReplies(cfg.ReplyStream, 1); got[0].RequestID != cmd.RequestID {
		t.Errorf("reply to %s, want %s", got[0].RequestID, cmd.RequestID)
	}
}

func TestWrongTypeRequestStreamStopsRun(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *server) {
		cfg := testConfig(t)
		srv.do("SET", cfg.RequestStream, "not a stream")
		e := newEngine(t, srv, cfg)
		e.start()
		select {
		case <-e.done:
		case <-testContext(t).Done():
			t.Fatal("Run did not return")
		}
		if err := e.stop(); err == nil {
			t.Fatal("Run returned nil, want the WRONGTYPE error")
		} else {
			t.Logf("Run: %v", err)
		}
	})
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	t.Parallel()
	_, err := New(Config{ErrorRatio: 2}, zap.NewNop(), nil, nil)
	if err == nil {
		t.Fatal("New accepted ENGINE_ERROR_RATIO=2")
	}
	t.Log(err)
}

func TestNewAppliesDefaults(t *testing.T) {
	t.Parallel()
	s, err := New(Config{}, zap.NewNop(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Config()
	if c.RequestStream != DefaultRequestStream || c.ReplyStream != DefaultReplyStream || c.Group != DefaultGroup ||
		c.UsersKey != DefaultRequestStream+UsersKeySuffix || c.ReadCount != DefaultReadCount || c.Consumer == "" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

// TestMetricsRegisterTwiceFails: a second Sim on one registry is refused,
// not a panic.
func TestMetricsRegisterTwiceFails(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, zap.NewNop(), nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, zap.NewNop(), nil, reg); err == nil {
		t.Fatal("second registration succeeded")
	}
}

// TestRefusedReplyIsAcked: a reply Redis refuses (replyTo holds a string)
// cannot succeed on a retry either: the request is acked, nothing stalls.
func TestRefusedReplyIsAcked(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	wrong := cfg.RequestStream + ":not-a-stream"
	srv.do("SET", wrong, "x")
	e := startEngine(t, srv, cfg)
	srv.send(cfg, "user-1", wrong)
	later := srv.send(cfg, "user-2", "")
	if r := srv.waitReplies(cfg.ReplyStream, 1); r[0].RequestID != later.RequestID {
		t.Errorf("reply to %s, want %s", r[0].RequestID, later.RequestID)
	}
	eventually(t, "both acked", func() bool { return srv.pending(cfg) == 0 })
	if n := testenv.Metric(t, e.reg, "engine_sim_redis_errors_total", "op", "xadd"); n != 1 {
		t.Errorf("xadd errors %v, want 1", n)
	}
}

// TestStoreRefusalAnswersError: when Redis refuses the SADD (the users key
// holds a string), the request is answered status error, as refengine
// answers a failing store.
func TestStoreRefusalAnswersError(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	srv.do("SET", cfg.RequestStream+UsersKeySuffix, "x")
	e := startEngine(t, srv, cfg)
	srv.send(cfg, "user-1", "")
	if r := srv.waitReplies(cfg.ReplyStream, 1)[0]; r.Status != domain.StatusError || r.Message != refengine.MessageError {
		t.Errorf("reply %+v, want status error", r.Reply)
	}
	if n := e.commands(t, ResultError); n != 1 {
		t.Errorf("commands error %d, want 1", n)
	}
}
