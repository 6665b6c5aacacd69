package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/ensure-user/ensure-user/app"
	"github.com/ensure-user/ensure-user/config"
	"github.com/ensure-user/ensure-user/test/testenv"
)

const secret = "0123456789abcdef0123456789abcdef"

func load(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	base := map[string]string{
		"HTTP_ADDR":        "127.0.0.1:0",
		"JWT_HS256_SECRET": secret,
		"SHUTDOWN_DELAY":   "0s",
	}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := base[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func token(t *testing.T) string {
	c := testenv.TokenClaims(time.Now(), "", "")
	c["sub"], c["email"] = "u1", "u1@example.com"
	delete(c, "iss")
	delete(c, "aud")
	return testenv.MintHS256Token(t, []byte(secret), c)
}

// run builds the app, serves one request, stops it, and checks that no
// goroutine survives: the reply reader, the key refresher and the servers
// all end with the app.
func run(t *testing.T, cfg config.Config, check func(a *app.App)) {
	t.Helper()
	defer goleak.VerifyNone(t,
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient).lazyRefresh.func1"),
		goleak.IgnoreCurrent())
	a, cleanup, err := app.Build(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		cleanup()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx) }()

	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	if err := a.WaitReady(wctx); err != nil {
		t.Error(err)
	}
	wcancel()
	check(a)
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	cleanup()
	http.DefaultClient.CloseIdleConnections()
}

func ensure(t *testing.T, a *app.App) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.Addr().String()+"/api/v1/auth/ensure-user", nil)
	req.Header.Set("Authorization", "Bearer "+token(t))
	resp, body := testenv.Do(t, http.DefaultClient, req)
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
}

func TestAppWithTheMemoryBus(t *testing.T) {
	run(t, load(t, map[string]string{"ENGINE_TRANSPORT": "memory"}), func(a *app.App) { ensure(t, a) })
}

func TestAppWithRedisStreams(t *testing.T) {
	r := testenv.StartRedis(t)
	idp := testenv.NewJWKSServer(t, testenv.NewJWKSKey(t, "ES256", "k1"))
	cfg := load(t, map[string]string{
		"REDIS_URL": r.URL(), "JWKS_URL": idp.URL + "/jwks.json", "JWT_ISSUER": "*", "JWT_AUDIENCE": "*",
		"ENGINE_REPLY_TIMEOUT": "500ms",
	})
	run(t, cfg, func(a *app.App) {
		// No Engine runs here: the HS256 request is sent and times out as 202.
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.Addr().String()+"/api/v1/auth/ensure-user", nil)
		req.Header.Set("Authorization", "Bearer "+token(t))
		if resp, body := testenv.Do(t, http.DefaultClient, req); resp.StatusCode != 202 {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})
}

func TestMetricsOnTheirOwnListener(t *testing.T) {
	cfg := load(t, map[string]string{"ENGINE_TRANSPORT": "memory", "METRICS_ADDR": "127.0.0.1:0"})
	run(t, cfg, func(a *app.App) {
		ensure(t, a)
		resp, err := http.Get("http://" + a.MetricsAddr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		b := string(raw)
		if !strings.Contains(b, `ensure_user_outcomes_total{outcome="confirmed"} 1`) ||
			!strings.Contains(b, "ensure_user_build_info{") || !strings.Contains(b, "go_goroutines") {
			t.Errorf("metrics listener lacks the service's metrics:\n%.2000s", b)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.Addr().String()+"/metrics", nil)
		if resp, _ := testenv.Do(t, http.DefaultClient, req); resp.StatusCode != 404 {
			t.Errorf("/metrics on the main listener: %d, want 404 when METRICS_ADDR is set", resp.StatusCode)
		}
	})
}
