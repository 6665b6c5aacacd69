package jwksauth

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ensure-user/ensure-user/ports"
	"github.com/ensure-user/ensure-user/test/fake"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	issuer   = "https://idp.example.com/"
	audience = "ensure-user"
	secret   = "0123456789abcdef0123456789abcdef-legacy"
)

// keys are expensive to generate (RSA), so the tests share one set; it is
// never modified.
type keys struct {
	es, es2, rs, ed *testenv.JWKSKey
}

var (
	sharedKeysOnce sync.Once
	sharedKeys     keys
)

func testKeys(t testing.TB) keys {
	sharedKeysOnce.Do(func() {
		sharedKeys = keys{
			es:  testenv.NewJWKSKey(t, "ES256", "es-1"),
			es2: testenv.NewJWKSKey(t, "ES256", "es-2"),
			rs:  testenv.NewJWKSKey(t, "RS256", "rs-1"),
			ed:  testenv.NewJWKSKey(t, "EdDSA", "ed-1"),
		}
	})
	return sharedKeys
}

// authConfig is the production default configuration (config.Vars of the service) for url.
func authConfig(url string) Config {
	return Config{
		JWKSURL:              url,
		Refresh:              10 * time.Minute,
		MinRefresh:           30 * time.Second,
		Timeout:              5 * time.Second,
		Issuer:               issuer,
		Audience:             audience,
		Leeway:               30 * time.Second,
		RequireExp:           true,
		UserIDClaims:         []string{"userId", "sub"},
		EmailClaim:           "email",
		RequireVerifiedEmail: true,
	}
}

// rig is a verifier under test with its clock and metrics.
type rig struct {
	v     *Verifier
	clock *fake.Clock
	reg   *prometheus.Registry
}

// newRig builds a verifier on a fresh fake clock; New must succeed. The
// cleanup runs at test end.
func newRig(t testing.TB, cfg Config) *rig {
	t.Helper()
	c := fake.NewClock()
	return newRigClock(t, cfg, c, c)
}

// newRigClock builds a verifier reading clk, which is fc or wraps it.
func newRigClock(t testing.TB, cfg Config, clk ports.Clock, fc *fake.Clock) *rig {
	t.Helper()
	r := &rig{clock: fc, reg: prometheus.NewRegistry()}
	log := zaptest.NewLogger(t)
	if _, bench := t.(*testing.B); bench {
		log = zap.NewNop() // keep benchmark output to numbers
	}
	v, cleanup, err := New(cfg, log, clk, r.reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(cleanup)
	r.v = v
	return r
}

// recordingClock is a fake clock that reports every duration passed to
// After, once the timer is set, so a test can check the refresh schedule.
type recordingClock struct {
	*fake.Clock
	waits chan time.Duration
}

func newRecordingClock() recordingClock {
	return recordingClock{Clock: fake.NewClock(), waits: make(chan time.Duration, 64)}
}

func (c recordingClock) After(d time.Duration) <-chan time.Time {
	ch := c.Clock.After(d)
	c.waits <- d
	return ch
}

// nextWait returns the next duration the refresher waits for.
func (c recordingClock) nextWait(t testing.TB) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		return d
	case <-ctxFor(t).Done():
		t.Fatal("the refresher never waited")
		return 0
	}
}

// loadedRig builds a verifier and waits for its first fetch to succeed.
func loadedRig(t testing.TB, cfg Config) *rig {
	t.Helper()
	r := newRig(t, cfg)
	r.awaitFetches(t, 1)
	if err := r.v.Ready(); err != nil {
		t.Fatalf("Ready after the first fetch: %v", err)
	}
	return r
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// awaitFetches waits until the refresher completed n fetches in all.
func (r *rig) awaitFetches(t testing.TB, n int) {
	t.Helper()
	if err := r.v.keys.awaitFetches(ctxFor(t), n); err != nil {
		t.Fatalf("waiting for fetch %d: %v", n, err)
	}
}

// tick advances the clock by d once the refresher waits on its timer, and
// waits for the fetch the timer starts: fetch number n.
func (r *rig) tick(t testing.TB, d time.Duration, n int) {
	t.Helper()
	if err := r.clock.BlockUntilContext(ctxFor(t), 1); err != nil {
		t.Fatalf("refresher never waited: %v", err)
	}
	r.clock.Advance(d)
	r.awaitFetches(t, n)
}

func (r *rig) claims() map[string]any { return testenv.TokenClaims(r.clock.Now(), issuer, audience) }

// refreshes reads ensure_user_jwks_refresh_total{result}.
func (r *rig) refreshes(result string) float64 {
	if result == "ok" {
		return testutil.ToFloat64(r.v.m.refreshOK)
	}
	return testutil.ToFloat64(r.v.m.refreshFailed)
}

func testutilValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// cacheResults reads ensure_user_token_cache_total{result}.
func (r *rig) cacheResults(result string) float64 {
	if result == "hit" {
		return testutil.ToFloat64(r.v.m.cacheHit)
	}
	return testutil.ToFloat64(r.v.m.cacheMiss)
}

// gauge reads ensure_user_jwks_keys.
func (r *rig) gauge() float64 { return testutil.ToFloat64(r.v.m.keys) }
