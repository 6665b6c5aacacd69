package redisbus

import (
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ensure-user/ensure-user/test/testenv"
)

// backlogFixture is a bus with MAXLEN 100 sampling its backlog every 20 ms,
// whose warnings are observed.
func backlogFixture(t *testing.T) (*fixture, *observer.ObservedLogs) {
	t.Helper()
	r := testenv.StartRedis(t)
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core()))
	f := newLoggedFixture(t, r, dial(t, r.URL()), log, func(c *Config, s *settings) {
		c.RequestMaxLen = 100
		s.backlogEvery = 20 * time.Millisecond
		s.backlogWarn = time.Hour // one warning per test
	})
	f.waitStarted(t)
	return f, logs
}

func (f *fixture) sendN(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		cmd, _ := f.send(t, "user-"+strconv.Itoa(i))
		f.bus.Abandon(cmd.RequestID)
	}
}

func (f *fixture) gaugeIs(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, name+" reaches "+strconv.FormatFloat(want, 'f', -1, 64), func() bool {
		v, ok := testenv.LookupMetric(t, f.reg, name, labels...)
		return ok && v == want
	})
}

const (
	backlogGauge = "ensure_user_engine_request_backlog"
	nearGauge    = "ensure_user_engine_backlog_near_retention"
)

func nearWarnings(logs *observer.ObservedLogs) int {
	return logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("nears the request stream's MAXLEN").Len()
}

// TestBacklogLagNearsRetention: an Engine group that stops reading lets its
// lag grow past 80 % of MAXLEN: the gauge says so, one warning is logged
// however many samples see it, and both clear once the group catches up.
// A group that goes away loses its series.
func TestBacklogLagNearsRetention(t *testing.T) {
	t.Parallel()
	f, logs := backlogFixture(t)
	ctx := testContext(t)
	r, stream := f.redis, f.cfg.RequestStream
	r.MustDo(ctx, "XGROUP", "CREATE", stream, "engine", "$", "MKSTREAM")
	r.MustDo(ctx, "XGROUP", "CREATE", stream, "audit", "$")

	f.sendN(t, 50)
	f.gaugeIs(t, 50, backlogGauge, "kind", "length")
	f.gaugeIs(t, 50, backlogGauge, "kind", "lag", "group", "engine")
	// The audit group reads everything: only the engine group lags.
	r.MustDo(ctx, "XREADGROUP", "GROUP", "audit", "a1", "COUNT", "1000", "STREAMS", stream, ">")
	f.gaugeIs(t, 0, backlogGauge, "kind", "lag", "group", "audit")
	if got := f.metric(t, nearGauge); got != 0 {
		t.Errorf("near retention at 50/100 = %v", got)
	}

	f.sendN(t, 40) // the engine group's lag is 90 > 80
	f.gaugeIs(t, 1, nearGauge)
	time.Sleep(100 * time.Millisecond) // several more samples
	if n := nearWarnings(logs); n != 1 {
		t.Errorf("%d warnings, want exactly 1 (rate-limited)", n)
	}

	r.MustDo(ctx, "XREADGROUP", "GROUP", "engine", "e1", "COUNT", "1000", "STREAMS", stream, ">")
	f.gaugeIs(t, 0, nearGauge)
	f.gaugeIs(t, 0, backlogGauge, "kind", "lag", "group", "engine")

	r.MustDo(ctx, "XGROUP", "DESTROY", stream, "audit")
	testenv.Eventually(t, 5*time.Second, "the audit series is gone", func() bool {
		_, found := testenv.LookupMetric(t, f.reg, backlogGauge, "group", "audit")
		return !found
	})
}

// TestBacklogWithoutGroup: an Engine that reads without a consumer group
// leaves no position behind, and the length alone cannot tell a backlog from
// a stream that is simply full of processed commands: no alarm, said once.
func TestBacklogWithoutGroup(t *testing.T) {
	t.Parallel()
	f, logs := backlogFixture(t)
	f.gaugeIs(t, 0, backlogGauge, "kind", "length") // a missing stream is empty, not an error
	if got := f.metric(t, "ensure_user_redis_errors_total", "op", "xinfo"); got != 0 {
		t.Errorf("xinfo errors = %v on a missing stream", got)
	}
	f.sendN(t, 85)
	f.gaugeIs(t, 85, backlogGauge, "kind", "length")
	f.gaugeIs(t, 0, nearGauge)
	if n := nearWarnings(logs); n != 0 {
		t.Errorf("%d warnings without a group, want none", n)
	}
	if n := logs.FilterMessageSnippet("cannot be measured").Len(); n != 1 {
		t.Errorf("%d 'cannot be measured' lines, want exactly 1", n)
	}
}
