package scale

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// The many-instances setup: three instances, one Redis, one Engine.
const (
	instances   = 3
	burst       = 3000 // concurrent requests, for distinct users
	burstEngine = "100ms"
)

// mintAll mints a token for every user, on every core.
func mintAll(t *testing.T, p *testenv.IdP, users []string) []string {
	t.Helper()
	tokens := make([]string, len(users))
	errs := make([]error, len(users))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(users); i += workers {
				tokens[i], errs[i] = tokenFor(p.Key, users[i])
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return tokens
}

// TestManyInstances runs three ensure-user processes on one redis-server
// and one engine-sim whose replies are delayed at random (0-100 ms), so they
// come back out of order, and fires 3,000 concurrent requests for distinct
// users, spread over the instances. The Engine runs in legacy mode: its
// reply to a new user is that user's id, and a reply carrying another id
// would turn the answer into 202, so every 200 proves the answer was the
// request's own. Run with a shared reply stream, every instance reads every
// reply and counts the others' as unknown (fan-out); with per-instance
// streams, none does. Then, per-instance: a clean stop deletes the
// instance's stream, a SIGKILL leaves one that expires within
// ReplyStreamTTL. It runs alone (not parallel): the burst takes every core.
func TestManyInstances(t *testing.T) {
	p := testenv.NewIdP(t)
	users := make([]string, burst)
	for i := range users {
		users[i] = fmt.Sprintf("user-%04d", i)
	}
	tokens := mintAll(t, p, users)

	for _, mode := range []struct {
		name, stream string
		perInstance  bool
	}{
		{"shared", "engine:replies", false},
		{"per-instance", "engine:replies:{instance}", true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			r := testenv.StartRedis(t)
			testenv.StartEngineSim(t, r.URL(), map[string]string{
				"ENGINE_LEGACY": "true", "ENGINE_REPLY_DELAY": "0s", "ENGINE_REPLY_DELAY_MAX": burstEngine,
			})
			svcs := make([]*testenv.Service, instances)
			for i := range svcs {
				svcs[i] = startService(t, p, r.URL(), map[string]string{
					"INSTANCE_ID":          "scale-" + strconv.Itoa(i),
					"ENGINE_REPLY_STREAM":  mode.stream,
					"ENGINE_REPLY_TIMEOUT": "20s", // a bound for a loaded CI machine, not a wait
					// 1,000 new connections per instance on two cores with
					// the race detector: a connection's goroutine may first
					// run seconds after its client sent the headers, and an
					// XADD may take longer than its 2 s default bound (CI saw
					// 163 of 3,000 answered 502 so).
					"HTTP_READ_HEADER_TIMEOUT": "30s",
					"ENGINE_SEND_TIMEOUT":      "20s",
					"SHUTDOWN_TIMEOUT":         "30s",
				})
			}
			ctx := context.Background()
			stream := func(i int) string { return "engine:replies:scale-" + strconv.Itoa(i) }
			if mode.perInstance {
				for i := range svcs {
					if n, _ := r.MustDo(ctx, "EXISTS", stream(i)).AsInt64(); n != 1 {
						t.Fatalf("instance %d is ready but its stream %s does not exist", i, stream(i))
					}
				}
			}

			answers := make([]answer, burst)
			client := newHTTPClient(burst)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range users {
				wg.Go(func() {
					<-start
					a := exchange(ctx, client, svcs[i%instances].URL, tokens[i])
					a.user, a.svc = users[i], i%instances
					answers[i] = a
				})
			}
			began := time.Now()
			close(start)
			wg.Wait()
			elapsed := time.Since(began)
			t.Logf("%d concurrent requests over %d instances: %s in %s (%.0f requests/s, race detector %v)",
				burst, instances, summary(answers), elapsed.Round(time.Millisecond), float64(burst)/elapsed.Seconds(), raceEnabled)

			for _, a := range answers {
				a.Check(t)
				if a.Err != nil || a.Status != http.StatusOK || a.Body != bodyConfirmed {
					t.Errorf("%s via instance %d: %d %s %v; want 200 confirmed (a reply meant for another user gives 202)",
						a.user, a.svc, a.Status, a.Body, a.Err)
				}
			}
			if n, _ := r.MustDo(ctx, "SCARD", "engine:requests:users").AsInt64(); n != burst {
				t.Errorf("the Engine knows %d users, want %d", n, burst)
			}

			sum := func(series string) float64 {
				total := 0.0
				for _, s := range svcs {
					total += s.Metric(t, series)
				}
				return total
			}
			delivered := `ensure_user_engine_replies_total{result="delivered"}`
			unknown := `ensure_user_engine_replies_total{result="unknown"}`
			if got := sum(delivered); got != burst {
				t.Errorf("delivered = %v over all instances, want %d", got, burst)
			}
			if got := sum("ensure_user_engine_commands_sent_total"); got != burst {
				t.Errorf("commands sent = %v over all instances, want %d: one per request", got, burst)
			}
			if got := sum(`ensure_user_engine_replies_total{result="late"}`); got != 0 {
				t.Errorf("late = %v, want 0", got)
			}
			if mode.perInstance {
				for i, s := range svcs {
					if got := s.Metric(t, unknown); got != 0 {
						t.Errorf("instance %d: unknown = %v, want 0 on its own stream", i, got)
					}
				}
				checkStreamLifecycle(t, r, svcs, stream)
				return
			}
			// Each instance reads the replies to the other two as well.
			want := float64((instances - 1) * burst)
			eventually(t, 10*time.Second, fmt.Sprintf("unknown reaches %v over all instances", want), func() bool {
				return sum(unknown) == want
			})
			for i, s := range svcs {
				t.Logf("instance %d: unknown = %v", i, s.Metric(t, unknown))
			}
		})
	}
}

// checkStreamLifecycle stops instance 0 cleanly and SIGKILLs instance 1:
// the first stream is deleted, and a reply the Engine writes for it later
// does not bring it back (NOMKSTREAM); the second remains with an expiry, as
// does the stream of instance 2, which keeps running.
func checkStreamLifecycle(t *testing.T, r *testenv.Redis, svcs []*testenv.Service, stream func(int) string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svcs[0].Signal(syscall.SIGTERM)
	if code, err := svcs[0].Wait(ctx); err != nil || code != 0 {
		t.Fatalf("instance 0 exited %d, %v after SIGTERM; want 0", code, err)
	}
	if n, _ := r.MustDo(ctx, "EXISTS", stream(0)).AsInt64(); n != 0 {
		t.Errorf("%s survived its instance's clean stop", stream(0))
	}
	// A command still asking for a reply on the departed instance's stream:
	// the Engine handles it and writes its reply with NOMKSTREAM, so the
	// stream is not created again.
	orphan := protocol.EncodeCommand(domain.Command{
		RequestID: domain.NewRequestID(), User: domain.User{ID: "orphan", Email: "orphan@example.com"}, SentAt: time.Now(),
	}, stream(0))
	r.MustDo(ctx, "XADD", "engine:requests", "*", "message", string(orphan))
	eventually(t, 10*time.Second, "the Engine has handled and acked the orphan command", func() bool {
		groups, err := r.MustDo(ctx, "XINFO", "GROUPS", "engine:requests").ToArray()
		if err != nil || len(groups) != 1 {
			return false
		}
		g, _ := groups[0].AsMap()
		lag, pending := g["lag"], g["pending"]
		l, err1 := lag.AsInt64()
		p, err2 := pending.AsInt64()
		return err1 == nil && err2 == nil && l == 0 && p == 0
	})
	if n, _ := r.MustDo(ctx, "SISMEMBER", "engine:requests:users", "orphan").AsInt64(); n != 1 {
		t.Error("the Engine did not handle the orphan command")
	}
	if n, _ := r.MustDo(ctx, "EXISTS", stream(0)).AsInt64(); n != 0 {
		t.Errorf("the Engine's reply recreated %s: it must write with NOMKSTREAM", stream(0))
	}
	svcs[1].Signal(syscall.SIGKILL)
	if _, err := svcs[1].Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		ttl, err := r.MustDo(ctx, "PTTL", stream(i)).AsInt64()
		if err != nil || ttl <= 0 || ttl > time.Minute.Milliseconds() {
			t.Errorf("%s: PTTL %d, %v; want an expiry within a minute (ReplyStreamTTL)", stream(i), ttl, err)
		}
	}
}

// TestDurableAOFRefusedByService: on a server without WAITAOF (before Redis
// 7.2), ENGINE_DURABLE_SEND=aof stops the service at start, non-zero, with a
// message naming the server's version; on 7.2 and later the service starts.
func TestDurableAOFRefusedByService(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.WithRedisPersistence())
	r.SkipIfEmbedded(t, "COMMAND INFO")
	version := r.Version(context.Background())
	if testenv.VersionAtLeast(version, 7, 2) {
		t.Skipf("redis-server %s has WAITAOF: nothing to refuse", version)
	}
	p := testenv.NewIdP(t)
	proc := testenv.Start(t, testenv.BuildBinary(t, "./cmd/ensure-user"), map[string]string{
		"HTTP_ADDR": "127.0.0.1:0", "REDIS_URL": r.URL(), "JWKS_URL": p.URL,
		"JWT_ISSUER": testenv.Issuer, "JWT_AUDIENCE": testenv.Audience, "ENGINE_DURABLE_SEND": "aof",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, err := proc.Wait(ctx)
	if err != nil {
		t.Fatalf("the service kept running with ENGINE_DURABLE_SEND=aof on Redis %s", version)
	}
	out := proc.Output()
	if code == 0 || !strings.Contains(out, "WAITAOF") || !strings.Contains(out, version) {
		t.Fatalf("exit %d, output:\n%s\nwant a non-zero exit naming WAITAOF and Redis %s", code, out, version)
	}
	t.Logf("exit %d: %s", code, lastLine(out))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
