package scale

import (
	"context"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestSentinel runs the service and engine-sim through three sentinels
// (REDIS_URL with ?master_set=), checks the contract, then kills the master
// under traffic: the sentinels promote the replica, and the service follows
// without a restart. As for the cluster: only 200, 202, 502 or 503 during
// the failover, none later than the reply timeout plus a margin, and every
// user answered 200 is known to the Engine on the promoted master.
func TestSentinel(t *testing.T) {
	t.Parallel()
	s := testenv.StartSentinel(t)
	p := testenv.NewIdP(t)
	testenv.StartEngineSim(t, s.URL(), failoverEngine)
	svc := startService(t, p, s.URL(), map[string]string{
		"INSTANCE_ID": "sentinel-a", "ENGINE_REPLY_STREAM": "engine:replies:{instance}",
		"ENGINE_REPLY_TIMEOUT": failoverTimeout.String(),
	})
	ctx := context.Background()
	checkContract(t, p, svc, "sentinel")

	tr := startTraffic(t, p, "sentinel", 8, 40*time.Millisecond, svc)
	eventually(t, 20*time.Second, "traffic confirmed", func() bool { return confirmedSince(tr.snapshot(), 0, 0) >= 10 })
	old, err := s.MasterAddr(ctx)
	if err != nil || old != s.Master.Addr() {
		tr.finish()
		t.Fatalf("sentinels name %s (%v) as master, want %s", old, err, s.Master.Addr())
	}
	s.Master.Kill()
	killed := time.Now()
	promoted, err := s.WaitFailover(ctx, old)
	if err != nil {
		tr.finish()
		t.Fatal(err)
	}
	t.Logf("master %s killed; sentinels promoted %s after %s", old, promoted, time.Since(killed).Round(time.Millisecond))
	after := len(tr.snapshot())
	eventually(t, 20*time.Second, "the service confirms again, unrestarted", func() bool {
		return confirmedSince(tr.snapshot(), after, 0) >= 10
	})
	t.Logf("the service confirms again %s after the kill", time.Since(killed).Round(time.Millisecond))
	answers := tr.finish()
	t.Logf("%d requests through the failover: %s", len(answers), summary(answers))

	confirmed := checkFailoverAnswers(t, answers, failoverTimeout, failoverMargin)
	known, err := s.Replica.MustDo(ctx, "SMEMBERS", "engine:requests:users").AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	checkConfirmedKnown(t, confirmed, known)
	if n, _ := s.Replica.MustDo(ctx, "EXISTS", "engine:replies:sentinel-a").AsInt64(); n != 1 {
		t.Error("the service's reply stream is gone after the failover")
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := svc.WaitReady(rctx); err != nil {
		t.Error(err)
	}
}
