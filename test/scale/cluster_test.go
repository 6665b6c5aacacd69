package scale

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

// failoverTimeout is the ENGINE_REPLY_TIMEOUT of the failover tests, and
// failoverMargin what an answer may take beyond it on a loaded machine
// (race detector, two cores, other packages' tests alongside; the client's
// clock also counts what happens before the service's timer starts). It
// bounds a hang, not a speed: a request that ignored its timeout would wait
// for the client's 60 s.
const (
	failoverTimeout = 3 * time.Second
	failoverMargin  = 5 * time.Second
)

// failoverEngine is engine-sim for failover tests: entries a dead consumer
// left pending are claimed after 2 s instead of 30.
var failoverEngine = map[string]string{"ENGINE_CLAIM_IDLE": "2s"}

// TestCluster runs the service and engine-sim on a real Redis Cluster (three
// masters, three replicas) through a REDIS_URL listing the nodes: instance a
// with its own reply stream, instance b on the shared one with
// ENGINE_DURABLE_SEND=replica. It checks the HTTP contract, the 202 of a
// silent Engine, and then a failover under traffic: the master holding the
// request stream's slot is killed; answers during the failover are only
// 200, 202, 502 or 503, none later than the reply timeout plus a margin;
// every user answered 200 is in the Engine's users set on the promoted
// master; both instances answer 200 again without a restart (b once the
// shard has a replica again to prove its sends durable on).
func TestCluster(t *testing.T) {
	t.Parallel()
	c := testenv.StartCluster(t)
	p := testenv.NewIdP(t)
	engine := testenv.StartEngineSim(t, c.URL(), failoverEngine)
	timeout := failoverTimeout.String()
	a := startService(t, p, c.URL(), map[string]string{
		"INSTANCE_ID": "cluster-a", "ENGINE_REPLY_STREAM": "engine:replies:{instance}", "ENGINE_REPLY_TIMEOUT": timeout,
	})
	b := startService(t, p, c.URL(), map[string]string{
		"INSTANCE_ID": "cluster-b", "ENGINE_DURABLE_SEND": "replica", "ENGINE_REPLY_TIMEOUT": timeout,
	})
	ctx := context.Background()
	top := t // processes started in subtests must outlive them

	t.Run("contract", func(t *testing.T) {
		checkContract(t, p, a, "a")
		checkContract(t, p, b, "b")
	})

	t.Run("silent engine", func(t *testing.T) {
		engine.Signal(syscall.SIGTERM)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if code, err := engine.Wait(wctx); err != nil || code != 0 {
			t.Fatalf("engine-sim exited %d, %v", code, err)
		}
		var wg sync.WaitGroup
		for i, svc := range []*testenv.Service{a, b} {
			wg.Go(func() {
				user := "silent-" + string(rune('a'+i))
				token, err := tokenFor(p.Key, user)
				if err != nil {
					t.Error(err)
					return
				}
				got := post(ctx, t, newHTTPClient(1), svc.URL, token)
				if got.Err != nil || got.Status != http.StatusAccepted || got.Body != bodyInitiated {
					t.Errorf("%s with no Engine: %d %s %v, want 202 initiated", user, got.Status, got.Body, got.Err)
				}
			})
		}
		wg.Wait()
		engine = testenv.StartEngineSim(top, c.URL(), failoverEngine) // answers the two commands, late
	})

	t.Run("failover", func(t *testing.T) {
		tr := startTraffic(t, p, "cluster", 8, 40*time.Millisecond, a, b)
		eventually(t, 20*time.Second, "traffic confirmed on both instances", func() bool {
			s := tr.snapshot()
			return confirmedSince(s, 0, 0) >= 5 && confirmedSince(s, 0, 1) >= 5
		})
		master := c.MasterOf(ctx, "engine:requests")
		master.Kill()
		killed := time.Now()
		if err := c.WaitFailover(ctx, master); err != nil {
			tr.finish()
			t.Fatal(err)
		}
		t.Logf("master %s of engine:requests killed; replica promoted and cluster ok after %s",
			master.Addr(), time.Since(killed).Round(time.Millisecond))
		promoted := len(tr.snapshot())
		eventually(t, 20*time.Second, "instance a confirms again, unrestarted", func() bool {
			return confirmedSince(tr.snapshot(), promoted, 0) >= 10
		})
		t.Logf("instance a confirms again %s after the kill", time.Since(killed).Round(time.Millisecond))

		// Instance b proves each send is on a replica: the promoted master has
		// none until the old one comes back, as its replica.
		master.Restart()
		newMaster := c.MasterOf(ctx, "engine:requests", master)
		eventually(t, 20*time.Second, "the old master is the new one's replica", func() bool {
			s, err := newMaster.Do(ctx, "INFO", "replication").ToString()
			return err == nil && strings.Contains(s, "state=online")
		})
		rejoined := len(tr.snapshot())
		eventually(t, 20*time.Second, "instance b confirms again", func() bool {
			return confirmedSince(tr.snapshot(), rejoined, 1) >= 5
		})
		answers := tr.finish()
		t.Logf("%d requests through the failover: %s", len(answers), summary(answers))

		confirmed := checkFailoverAnswers(t, answers, failoverTimeout, failoverMargin)
		cc := c.Client()
		known, err := cc.Do(ctx, cc.B().Smembers().Key("engine:requests:users").Build()).AsStrSlice()
		if err != nil {
			t.Fatal(err)
		}
		checkConfirmedKnown(t, confirmed, known)
		if n, _ := cc.Do(ctx, cc.B().Exists().Key("engine:replies:cluster-a").Build()).AsInt64(); n != 1 {
			t.Error("instance a's reply stream is gone after the failover")
		}
		for _, svc := range []*testenv.Service{a, b} {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := svc.WaitReady(rctx); err != nil {
				t.Error(err)
			}
			cancel()
		}
	})
}

// checkConfirmedKnown asserts that every user answered 200 is in the Engine's
// users set: a confirmed command was not lost.
func checkConfirmedKnown(t *testing.T, confirmed, known []string) {
	t.Helper()
	set := make(map[string]bool, len(known))
	for _, u := range known {
		set[u] = true
	}
	lost := 0
	for _, u := range confirmed {
		if !set[u] {
			lost++
			t.Errorf("%s was answered 200 but the Engine does not know it", u)
		}
	}
	t.Logf("%d users confirmed, %d lost", len(confirmed), lost)
}
