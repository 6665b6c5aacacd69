package redisbus

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func durable(mode string, wait time.Duration) fixtureOption {
	return func(c *Config, s *settings) {
		c.DurableSend = mode
		s.durableWait = wait
	}
}

// startReplica starts a replica of master and waits until it is in sync.
func startReplica(t *testing.T, master *testenv.Redis) *testenv.Redis {
	t.Helper()
	_, port, _ := strings.Cut(master.Addr(), ":")
	master.MustDo(testContext(t), "CONFIG", "SET", "repl-diskless-sync-delay", "0") // not 5 s
	replica := testenv.StartRedis(t, testenv.WithRedisArgs("--replicaof", "127.0.0.1", port))
	testenv.Eventually(t, 10*time.Second, "replica in sync", func() bool {
		s, err := replica.Do(testContext(t), "INFO", "replication").ToString()
		if err != nil || infoField(s, "master_link_status") != "up" {
			return false
		}
		s, err = master.Do(testContext(t), "INFO", "replication").ToString()
		return err == nil && strings.Contains(infoField(s, "slave0"), "state=online")
	})
	return replica
}

// TestDurableReplica: with a replica in sync, Send returns once the command
// is on the replica; with the replica gone, the command is in the master's
// stream but Send answers ErrSendUnknown after the bounded wait, and the
// reply that may still come counts as late.
func TestDurableReplica(t *testing.T) {
	t.Parallel()
	master := testenv.StartRedis(t)
	master.SkipIfEmbedded(t, "replication")
	replica := startReplica(t, master)
	f := newFixture(t, master, durable(DurableReplica, time.Second))
	ctx := testContext(t)

	cmd, replies := f.send(t, "user-1")
	if n, _ := replica.MustDo(ctx, "XLEN", f.cfg.RequestStream).AsInt64(); n != 1 {
		t.Fatalf("replica XLEN = %d right after Send, want 1: WAIT returned before the replica had it", n)
	}
	f.answer(t)
	expectReply(t, replies, cmd.RequestID)
	if got := f.metric(t, "ensure_user_engine_durable_sends_total", "result", "confirmed"); got != 1 {
		t.Errorf("confirmed = %v, want 1", got)
	}

	replica.Kill()
	start := time.Now()
	lost := newCommand("user-2")
	_, err := f.bus.Send(ctx, lost)
	elapsed := time.Since(start)
	if !errors.Is(err, domain.ErrSendUnknown) || !strings.Contains(err.Error(), "not proven durable") {
		t.Fatalf("Send without a replica = %v, want ErrSendUnknown (not proven durable)", err)
	}
	if elapsed < 900*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("Send took %s, want about the 1s wait", elapsed)
	}
	if _, err := f.engine.take(ctx, lost.RequestID); err != nil {
		t.Fatalf("the command is not in the master's stream: %v", err)
	}
	if err := f.engine.Reply(ctx, protocol.EncodeReply(protocol.Reply{RequestID: lost.RequestID, Message: "user-2", Status: "ok"})); err != nil {
		t.Fatal(err)
	}
	if got := f.metric(t, "ensure_user_engine_durable_sends_total", "result", "timeout"); got != 1 {
		t.Errorf("timeout = %v, want 1", got)
	}
	if got := f.metric(t, "ensure_user_engine_commands_sent_total"); got != 2 {
		t.Errorf("sent = %v, want 2 (the unproven command is in the stream)", got)
	}
	testenv.Eventually(t, 5*time.Second, "the reply counts as late", func() bool { return f.replies(t, "late") == 1 })
	if got := f.replies(t, "unknown"); got != 0 {
		t.Errorf("unknown = %v, want 0", got)
	}
}

// TestDurableRedisDown: the XADD+WAIT batch on a dead server fails as not
// sent, fast, like a plain XADD.
func TestDurableRedisDown(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "WAIT needs a real server to mean anything")
	f := newFixture(t, r, durable(DurableReplica, 200*time.Millisecond))
	r.Kill()
	testenv.Eventually(t, 5*time.Second, "reader notices", func() bool { return !f.bus.connected.Load() })
	deadline := time.Now().Add(2 * time.Second)
	for {
		start := time.Now()
		_, err := f.bus.Send(testContext(t), newCommand("u"))
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Fatalf("Send took %s with Redis down", elapsed)
		}
		if errors.Is(err, domain.ErrBusUnavailable) {
			return
		}
		if !errors.Is(err, domain.ErrSendUnknown) { // a connection that died an instant ago
			t.Fatalf("Send = %v, want ErrBusUnavailable", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("Send never reported ErrBusUnavailable")
		}
	}
}

// TestDurableAOFRefusedOnOldRedis: before Redis 7.2 there is no WAITAOF, and
// New refuses ENGINE_DURABLE_SEND=aof with a message naming the version;
// the service exits with it.
func TestDurableAOFRefusedOnOldRedis(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.WithRedisPersistence())
	r.SkipIfEmbedded(t, "COMMAND INFO")
	v := r.Version(testContext(t))
	if testenv.VersionAtLeast(v, 7, 2) {
		t.Skipf("redis-server %s has WAITAOF: TestDurableAOF covers it", v)
	}
	cfg := engineConfig(t)
	cfg.DurableSend = DurableAOF
	_, _, err := New(cfg, zap.NewNop(), dial(t, r.URL()), nil)
	if err == nil || !strings.Contains(err.Error(), "WAITAOF") || !strings.Contains(err.Error(), v) || !strings.Contains(err.Error(), "7.2") {
		t.Fatalf("New = %v, want a refusal naming WAITAOF, 7.2 and the version %s", err, v)
	}
	t.Logf("refusal: %v", err)
}

// TestDurableAOFCheckedOnceRedisIsUp: with Redis down at start, New cannot
// check for WAITAOF and succeeds; when Redis comes up without WAITAOF, the
// bus refuses to start, and Ready says why.
func TestDurableAOFCheckedOnceRedisIsUp(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	r.SkipIfEmbedded(t, "COMMAND INFO")
	if v := r.Version(testContext(t)); testenv.VersionAtLeast(v, 7, 2) {
		t.Skipf("redis-server %s has WAITAOF", v)
	}
	r.Kill()
	f := newIdleFixture(t, r, durable(DurableAOF, 100*time.Millisecond))
	r.Restart()
	testenv.Eventually(t, 5*time.Second, "Ready names WAITAOF", func() bool {
		err := f.bus.Ready(testContext(t))
		return errors.Is(err, domain.ErrBusUnavailable) && strings.Contains(err.Error(), "WAITAOF")
	})
	if _, err := f.bus.Send(testContext(t), newCommand("u")); !errors.Is(err, domain.ErrBusUnavailable) {
		t.Errorf("Send = %v, want ErrBusUnavailable", err)
	}
}

// TestDurableAOF: on Redis 7.2 or later with appendonly, Send returns once
// the command is fsynced; without appendonly New refuses.
func TestDurableAOF(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.WithRedisPersistence())
	r.SkipIfEmbedded(t, "WAITAOF")
	if v := r.Version(testContext(t)); !testenv.VersionAtLeast(v, 7, 2) {
		t.Skipf("WAITAOF needs Redis >= 7.2; this redis-server is %s (TestDurableAOFRefusedOnOldRedis checks the refusal)", v)
	}
	f := newFixture(t, r, durable(DurableAOF, 500*time.Millisecond))
	f.roundTrip(t)
	if got := f.metric(t, "ensure_user_engine_durable_sends_total", "result", "confirmed"); got != 1 {
		t.Errorf("confirmed = %v, want 1", got)
	}

	plain := testenv.StartRedis(t)
	cfg := engineConfig(t)
	cfg.DurableSend = DurableAOF
	if _, _, err := New(cfg, zap.NewNop(), dial(t, plain.URL()), nil); err == nil || !strings.Contains(err.Error(), "appendonly") {
		t.Errorf("New without appendonly = %v, want a refusal naming appendonly", err)
	}
}

func TestDurableWaitBound(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		reply, want time.Duration
	}{
		{5 * time.Second, time.Second},
		{2 * time.Second, 500 * time.Millisecond},
		{200 * time.Millisecond, 50 * time.Millisecond},
	} {
		if got := defaultSettings(Config{ReplyTimeout: tt.reply}).durableWait; got != tt.want {
			t.Errorf("reply timeout %s: durable wait %s, want %s", tt.reply, got, tt.want)
		}
	}
}

func TestInfoField(t *testing.T) {
	t.Parallel()
	info := "txt:# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
	if got := infoField(info, "role"); got != "master" {
		t.Errorf("role = %q", got)
	}
	if got := infoField(info, "connected_slaves"); got != "0" {
		t.Errorf("connected_slaves = %q", got)
	}
	if got := infoField(info, "missing"); got != "" {
		t.Errorf("missing = %q", got)
	}
	if !testenv.VersionAtLeast("7.2.4", 7, 2) || testenv.VersionAtLeast("7.0.15", 7, 2) || !testenv.VersionAtLeast("8.0.0", 7, 2) || testenv.VersionAtLeast("x", 7, 2) {
		t.Error("VersionAtLeast")
	}
}
