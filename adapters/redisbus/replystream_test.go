package redisbus

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/internal/setting"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// perInstance makes the fixture's reply stream per-instance, with instance id
// id, and applies more.
func perInstance(id string, more ...func(*settings)) fixtureOption {
	return func(c *Config, s *settings) {
		c.ReplyStream += ":" + InstancePlaceholder
		c.InstanceID = id
		for _, m := range more {
			m(s)
		}
	}
}

func exists(t *testing.T, r *testenv.Redis, key string) bool {
	t.Helper()
	n, err := r.MustDo(testContext(t), "EXISTS", key).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestPerInstanceReplyStream: the stream named after the instance exists,
// empty, with an expiry, before the first Send; commands ask for replies on
// it; replies flow; the clean stop deletes it.
func TestPerInstanceReplyStream(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	f := newFixture(t, r, perInstance("pod-7", func(s *settings) { s.streamTTL = 10 * time.Second }))
	stream := f.cfg.ReplyStreamName()
	if !strings.HasSuffix(stream, ":replies:pod-7") {
		t.Fatalf("reply stream %q, want the placeholder replaced by the instance id", stream)
	}
	ctx := testContext(t)
	if typ, _ := r.MustDo(ctx, "TYPE", stream).ToString(); typ != "stream" {
		t.Fatalf("TYPE %s = %q before any reply, want an (empty) stream", stream, typ)
	}
	if n, _ := r.MustDo(ctx, "XLEN", stream).AsInt64(); n != 0 {
		t.Errorf("XLEN = %d, want 0", n)
	}
	if ttl, _ := r.MustDo(ctx, "PTTL", stream).AsInt64(); ttl <= 0 || ttl > 10_000 {
		t.Errorf("PTTL = %d, want in (0, 10000]", ttl)
	}

	cmd, replies := f.send(t, "user-1")
	p, err := f.engine.take(ctx, cmd.RequestID)
	if err != nil {
		t.Fatal(err)
	}
	if req, _ := protocol.DecodeRequest(p); req.ReplyTo != stream {
		t.Errorf("replyTo = %q, want %q", req.ReplyTo, stream)
	}
	if err := f.engine.Reply(ctx, protocol.EncodeReply(protocol.Reply{RequestID: cmd.RequestID, Message: "user-1", Status: "ok"})); err != nil {
		t.Fatal(err)
	}
	expectReply(t, replies, cmd.RequestID)
	if err := f.bus.Ready(ctx); err != nil {
		t.Errorf("Ready = %v", err)
	}

	f.stop()
	if exists(t, r, stream) {
		t.Error("the reply stream survived the clean stop")
	}
}

// TestPerInstanceStreamExpiresAfterCrash: an instance that stops refreshing
// (its connection gone, as when the process is killed) leaves a stream that
// expires by itself.
func TestPerInstanceStreamExpiresAfterCrash(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	client, closeClient, err := Dial(ConnConfig{URL: setting.Secret(r.URL())}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	f := newClientFixture(t, r, client, perInstance("doomed", func(s *settings) {
		s.streamTTL, s.heartbeat = 400*time.Millisecond, 100*time.Millisecond
	}))
	f.waitStarted(t)
	f.roundTrip(t)
	stream := f.cfg.ReplyStreamName()
	time.Sleep(600 * time.Millisecond) // longer than the TTL: the heartbeat keeps it
	if !exists(t, r, stream) {
		t.Fatal("the stream expired while its instance ran")
	}
	closeClient() // the "crash": no heartbeat, no clean stop can reach Redis
	testenv.Eventually(t, 3*time.Second, "the stream expires", func() bool { return !exists(t, r, stream) })
}

// TestPerInstanceStreamRecreated: the stream vanishes under a running
// instance (flushed, expired in a long outage); the reader notices and the
// stream is back at once, well before the next heartbeat, and replies flow.
func TestPerInstanceStreamRecreated(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	f := newFixture(t, r, perInstance("i1", func(s *settings) {
		s.heartbeat = time.Hour // only the reader's alarm can bring it back
		s.block = 100 * time.Millisecond
	}))
	f.roundTrip(t)
	stream := f.cfg.ReplyStreamName()
	r.MustDo(testContext(t), "DEL", stream)
	testenv.Eventually(t, 3*time.Second, "the stream is recreated", func() bool { return exists(t, r, stream) })
	if ttl, _ := r.MustDo(testContext(t), "PTTL", stream).AsInt64(); ttl <= 0 {
		t.Errorf("recreated stream has PTTL %d, want an expiry", ttl)
	}
	f.roundTrip(t)
}

// TestPerInstanceStreamNotRecreatable: when the stream cannot be recreated
// (its name taken by a string), the instance is not ready, saying why; once
// the key is free again the heartbeat retries and it is ready again.
func TestPerInstanceStreamNotRecreatable(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	f := newFixture(t, r, perInstance("i1", func(s *settings) {
		s.heartbeat = 50 * time.Millisecond
		s.backoffMax = 50 * time.Millisecond
	}))
	ctx := testContext(t)
	stream := f.cfg.ReplyStreamName()
	r.MustDo(ctx, "DEL", stream)
	r.MustDo(ctx, "SET", stream, "squatter")
	testenv.Eventually(t, 3*time.Second, "Ready fails", func() bool {
		err := f.bus.Ready(ctx)
		return errors.Is(err, domain.ErrBusUnavailable) && strings.Contains(err.Error(), "could not be recreated")
	})
	r.MustDo(ctx, "DEL", stream)
	testenv.Eventually(t, 3*time.Second, "Ready recovers", func() bool { return f.bus.Ready(ctx) == nil })
	f.roundTrip(t)
}

// TestPerInstanceStreamTrimmed: the maintenance loop trims the replies read
// long enough ago (here 1 ms), so a per-instance stream stays small whatever
// the Engine's MAXLEN.
func TestPerInstanceStreamTrimmed(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "XTRIM MINID ~ trims whole radix-tree nodes on a real server")
	f := newFixture(t, r, perInstance("i1", func(s *settings) {
		s.keep, s.backlogEvery = time.Millisecond, 50*time.Millisecond
	}))
	ctx := testContext(t)
	stream := f.cfg.ReplyStreamName()
	for range 300 {
		if err := f.engine.Reply(ctx, protocol.EncodeReply(protocol.Reply{RequestID: domain.NewRequestID()})); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond) // the next reply's id is a few ms later
	f.roundTrip(t)
	testenv.Eventually(t, 3*time.Second, "old replies trimmed", func() bool {
		n, _ := r.MustDo(ctx, "XLEN", stream).AsInt64()
		return n < 150
	})
}

// TestLateAndUnknownPerInstance: on a per-instance stream every reply is this
// instance's, so foreign ids are rare and still counted apart: a reply to an
// abandoned request is late, one to a request never sent here unknown.
func TestLateAndUnknownPerInstance(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t), perInstance("i1"))
	ctx := testContext(t)
	abandoned, _ := f.send(t, "user-1")
	f.bus.Abandon(abandoned.RequestID)
	for _, rep := range []protocol.Reply{
		{RequestID: abandoned.RequestID, Message: "late"},
		{RequestID: domain.NewRequestID(), Message: "someone else's"},
	} {
		if err := f.engine.Reply(ctx, protocol.EncodeReply(rep)); err != nil {
			t.Fatal(err)
		}
	}
	f.roundTrip(t)
	if late, unknown := f.replies(t, "late"), f.replies(t, "unknown"); late != 1 || unknown != 1 {
		t.Errorf("late = %v, unknown = %v; want 1 and 1", late, unknown)
	}
}

// TestUnknownOutcomeReplyIsLate: an XADD whose outcome is unknown may have
// reached the Engine, so the reply that follows counts as late (the request
// is remembered as abandoned), not as another instance's.
func TestUnknownOutcomeReplyIsLate(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "CLIENT PAUSE")
	f := newFixture(t, r, func(_ *Config, s *settings) { s.xaddTimeout = 200 * time.Millisecond })
	ctx := testContext(t)
	r.MustDo(ctx, "CLIENT", "PAUSE", "1000", "WRITE")
	cmd := newCommand("u")
	if _, err := f.bus.Send(ctx, cmd); !errors.Is(err, domain.ErrSendUnknown) {
		t.Fatalf("Send = %v, want ErrSendUnknown", err)
	}
	r.MustDo(ctx, "CLIENT", "UNPAUSE")
	if _, err := f.engine.take(ctx, cmd.RequestID); err != nil {
		t.Fatalf("the command never reached the stream: %v", err)
	}
	if err := f.engine.Reply(ctx, protocol.EncodeReply(protocol.Reply{RequestID: cmd.RequestID, Message: "u", Status: "ok"})); err != nil {
		t.Fatal(err)
	}
	f.roundTrip(t)
	if late, unknown := f.replies(t, "late"), f.replies(t, "unknown"); late != 1 || unknown != 0 {
		t.Errorf("late = %v, unknown = %v; want 1 and 0", late, unknown)
	}
}

// TestSharedStreamCountsOthersAsUnknown: two instances on one shared reply
// stream each read the other's replies, as unknown; with per-instance
// streams neither does.
func TestSharedStreamCountsOthersAsUnknown(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name        string
		perInstance bool
		wantUnknown float64
	}{
		{"shared", false, 1},
		{"per-instance", true, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := testenv.StartRedis(t)
			base := engineConfig(t)
			opt := func(id string) fixtureOption {
				return func(c *Config, _ *settings) {
					*c = base
					if tt.perInstance {
						c.ReplyStream += ":" + InstancePlaceholder
					}
					c.InstanceID = id
				}
			}
			a, b := newFixture(t, r, opt("a")), newFixture(t, r, opt("b"))
			a.roundTrip(t) // a's reply: b sees it on a shared stream
			b.roundTrip(t) // b's reply: a sees it on a shared stream
			a.roundTrip(t) // proof that a has read what preceded its own reply
			if got := a.replies(t, "unknown"); got != tt.wantUnknown {
				t.Errorf("a: unknown = %v, want %v", got, tt.wantUnknown)
			}
		})
	}
}

// TestNewFailsWithoutInstanceID: a placeholder without an instance id is a
// wiring error.
func TestNewFailsWithoutInstanceID(t *testing.T) {
	t.Parallel()
	cfg := Config{RequestStream: "s", ReplyStream: "r:{instance}", RequestMaxLen: 1}
	if _, _, err := New(cfg, zap.NewNop(), nil, nil); err == nil {
		t.Error("New succeeded with {instance} and no instance id")
	}
}

// TestStallRepliesStayLate: after an Engine stall in which more requests
// timed out than correlate's default memory (4,096), their replies still
// count as late, not unknown: the table remembers ENGINE_MAX_WAITING ids.
func TestStallRepliesStayLate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testenv.StartRedis(t), perInstance("i1"))
	ctx := testContext(t)
	const n = 6000
	ids := make([]string, n)
	for i := range n {
		cmd, _ := f.send(t, "u")
		f.bus.Abandon(cmd.RequestID)
		ids[i] = cmd.RequestID
	}
	c := f.redis.Client()
	cmds := make(rueidis.Commands, 0, n)
	for _, id := range ids {
		reply := protocol.EncodeReply(protocol.Reply{RequestID: id, Message: "u", Status: "ok"})
		cmds = append(cmds, c.B().Xadd().Key(f.cfg.ReplyStreamName()).Id("*").FieldValue().FieldValue("message", string(reply)).Build())
	}
	for _, res := range c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			t.Fatal(err)
		}
	}
	f.roundTrip(t)
	if late, unknown := f.replies(t, "late"), f.replies(t, "unknown"); late != n || unknown != 0 {
		t.Errorf("late = %v, unknown = %v; want %d and 0", late, unknown, n)
	}
}
