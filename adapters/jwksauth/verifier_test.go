package jwksauth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/test/fake"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for name, mutate := range map[string]func(*Config){
		"nothing_to_verify_with": func(c *Config) { c.JWKSURL = "" },
		"short_secret":           func(c *Config) { c.HS256Secret = "short" },
		"scheme":                 func(c *Config) { c.JWKSURL = "ftp://idp.example.com/jwks" },
		"no_issuer":              func(c *Config) { c.Issuer = "" },
		"no_audience":            func(c *Config) { c.Audience = "" },
		"zero_refresh":           func(c *Config) { c.Refresh = 0 },
		"zero_min_refresh":       func(c *Config) { c.MinRefresh = 0 },
		"zero_timeout":           func(c *Config) { c.Timeout = 0 },
		"negative_leeway":        func(c *Config) { c.Leeway = -time.Second },
		"huge_leeway":            func(c *Config) { c.Leeway = time.Hour },
		"alg_none":               func(c *Config) { c.Algorithms = []string{"none"} },
		"alg_hs512":              func(c *Config) { c.Algorithms = []string{"HS512"} },
		"no_user_id_claim":       func(c *Config) { c.UserIDClaims = nil },
		"no_email_claim":         func(c *Config) { c.EmailClaim = "" },
		"missing_ca_file":        func(c *Config) { c.CAFile = "/nonexistent/ca.pem" },
		"ca_file_without_pem":    func(c *Config) { c.CAFile = "/dev/null" },
		"file_url_without_path":  func(c *Config) { c.JWKSURL = "file://" },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := authConfig("https://idp.example.com/.well-known/jwks.json")
			mutate(&cfg)
			v, cleanup, err := New(cfg, nil, fake.NewClock(), prometheus.NewRegistry())
			if err == nil || v != nil || cleanup != nil {
				cleanup()
				t.Fatal("New accepted a bad configuration")
			}
		})
	}
	if _, _, err := New(authConfig("file:///x"), nil, nil, nil); err == nil {
		t.Error("New accepted a nil clock")
	}
	reg := prometheus.NewRegistry()
	cfg := authConfig("")
	cfg.HS256Secret = secret
	if _, _, err := New(cfg, nil, fake.NewClock(), reg); err != nil {
		t.Fatal(err)
	}
	if _, _, err := New(cfg, nil, fake.NewClock(), reg); err == nil {
		t.Error("New registered its metrics twice on one registry")
	}
}

// TestCleanupStopsEverything is not parallel, so that goleak sees only this
// verifier's goroutines: the refresher and the HTTP transport's. It stops
// them while a fetch is stalled, too.
func TestCleanupStopsEverything(t *testing.T) {
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	ignore := goleak.IgnoreCurrent() // the test server's own goroutines
	for _, stalled := range []bool{false, true} {
		var release func()
		if stalled {
			release = srv.Hold()
		}
		v, cleanup, err := New(authConfig(srv.URL), nil, fake.NewClock(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if stalled {
			if err := srv.AwaitRequests(ctxFor(t), 2); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := v.keys.awaitFetches(ctxFor(t), 1); err != nil {
				t.Fatal(err)
			}
		}
		cleanup()
		cleanup() // idempotent
		if stalled {
			release()
		}
	}
	goleak.VerifyNone(t, ignore)
}

// TestHS256AndJWKSTogether: during the migration both kinds verify, each only
// by its own means; JWT_ALGORITHMS without HS256 turns the secret off.
func TestHS256AndJWKSTogether(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	cfg := authConfig(testenv.NewJWKSFile(t, k.es).URL)
	cfg.HS256Secret = secret
	r := loadedRig(t, cfg)
	for name, tok := range map[string]string{
		"jwks":   k.es.MintToken(t, r.claims()),
		"legacy": testenv.MintHS256Token(t, []byte(secret), r.claims()),
	} {
		if _, err := r.v.Verify(context.Background(), tok); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	cfg.Algorithms = []string{"ES256"}
	core, logs := observer.New(zapcore.WarnLevel)
	v, cleanup, err := New(cfg, zap.New(core), fake.NewClock(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	if logs.FilterMessageSnippet("HS256").Len() != 1 {
		t.Fatalf("no warning that HS256 is off: %v", logs.All())
	}
	if _, err := v.Verify(context.Background(), testenv.MintHS256Token(t, []byte(secret), r.claims())); !errors.Is(err, errHS256Refused) {
		t.Fatalf("HS256 with JWT_ALGORITHMS=ES256: %v", err)
	}
}

// TestWildcardDisablesIssAndAud: "*" turns the iss and aud checks off.
func TestWildcardDisablesIssAndAud(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	cfg := authConfig(testenv.NewJWKSFile(t, k.es).URL)
	cfg.Issuer, cfg.Audience = WildcardDisable, WildcardDisable
	r := loadedRig(t, cfg)
	c := r.claims()
	delete(c, "iss")
	c["aud"] = "anyone"
	if _, err := r.v.Verify(context.Background(), k.es.MintToken(t, c)); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsExposition: the series exist under their documented names and
// labels, with the values a known sequence gives.
func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es, k.rs, k.ed)
	r := loadedRig(t, authConfig(srv.URL))
	tok := k.es.MintToken(t, r.claims())
	for range 2 {
		if _, err := r.v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = r.v.Verify(context.Background(), testenv.NewJWKSKey(t, "ES256", "new").MintToken(t, r.claims()))
	want := `
# HELP ensure_user_jwks_keys Usable keys in the current key set.
# TYPE ensure_user_jwks_keys gauge
ensure_user_jwks_keys 3
# HELP ensure_user_jwks_refresh_total Key set fetches, by result (ok or failed).
# TYPE ensure_user_jwks_refresh_total counter
ensure_user_jwks_refresh_total{result="failed"} 0
ensure_user_jwks_refresh_total{result="ok"} 2
# HELP ensure_user_jwks_unknown_kid_refresh_total Key set fetches started because a token named an unknown kid.
# TYPE ensure_user_jwks_unknown_kid_refresh_total counter
ensure_user_jwks_unknown_kid_refresh_total 1
# HELP ensure_user_token_cache_total Verified-token cache lookups, by result (hit or miss).
# TYPE ensure_user_token_cache_total counter
ensure_user_token_cache_total{result="hit"} 1
ensure_user_token_cache_total{result="miss"} 2
`
	if err := testutil.GatherAndCompare(r.reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

// TestNeverLogsTokens: whatever happens, no log line carries a token.
func TestNeverLogsTokens(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	srv := testenv.NewJWKSServer(t, k.es)
	core, logs := observer.New(zapcore.DebugLevel)
	c := fake.NewClock()
	v, cleanup, err := New(authConfig(srv.URL), zap.New(core), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	if err := v.keys.awaitFetches(ctxFor(t), 1); err != nil {
		t.Fatal(err)
	}
	claims := testenv.TokenClaims(c.Now(), issuer, audience)
	tokens := []string{
		k.es.MintToken(t, claims),
		testenv.NewJWKSKey(t, "ES256", "unknown").MintToken(t, claims),
		k.es.MintToken(t, claims, testenv.TokenAlg("ES256"), testenv.TokenHeader("crit", []string{"x"})),
	}
	srv.ServeGarbage()
	for _, tok := range tokens {
		_, _ = v.Verify(context.Background(), tok)
	}
	for _, e := range logs.All() {
		line := e.Message + " " + strings.Join(fieldStrings(e.Context), " ")
		for _, tok := range tokens {
			for _, seg := range strings.Split(tok, ".") {
				if strings.Contains(line, seg) {
					t.Fatalf("log line carries a token: %s", line)
				}
			}
		}
	}
	if logs.Len() == 0 {
		t.Fatal("nothing logged: the test proves nothing")
	}
}

func fieldStrings(fs []zapcore.Field) []string {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	var out []string
	for k, v := range enc.Fields {
		out = append(out, k, strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(toString(v), "\n", " "), "\t", " ")))
	}
	return out
}

func toString(v any) string {
	if err, ok := v.(error); ok {
		return err.Error()
	}
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// TestReadyInHS256OnlyMode: without a key set there is nothing to wait for.
func TestReadyInHS256OnlyMode(t *testing.T) {
	t.Parallel()
	cfg := authConfig("")
	cfg.HS256Secret = secret
	r := newRig(t, cfg)
	if err := r.v.Ready(); err != nil {
		t.Fatal(err)
	}
	_, err := r.v.Verify(context.Background(), testKeys(t).es.MintToken(t, r.claims()))
	if !errors.Is(err, errAlgRefused) || errors.Is(err, domain.ErrVerifierUnavailable) {
		t.Fatalf("ES256 token without a key set configured: %v", err)
	}
}
