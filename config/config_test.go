package config_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/config"
)

func env(kv map[string]string) config.Lookup {
	return func(name string) (string, bool) {
		v, ok := kv[name]
		return v, ok
	}
}

// minimal is the smallest valid serve environment.
func minimal() map[string]string {
	return map[string]string{
		"JWKS_URL":     "https://idp.example.com/.well-known/jwks.json",
		"JWT_ISSUER":   "https://idp.example.com/",
		"JWT_AUDIENCE": "ensure-user",
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"HTTP_ADDR", c.HTTP.Addr, ":8000"},
		{"REDIS_URL", c.Redis.URL.Reveal(), "redis://127.0.0.1:6379/0"},
		{"JWKS_REFRESH", c.Auth.Refresh, 10 * time.Minute},
		{"JWKS_MIN_REFRESH", c.Auth.MinRefresh, 30 * time.Second},
		{"JWKS_TIMEOUT", c.Auth.Timeout, 5 * time.Second},
		{"JWT_LEEWAY", c.Auth.Leeway, 30 * time.Second},
		{"JWT_REQUIRE_EXP", c.Auth.RequireExp, true},
		{"JWT_USER_ID_CLAIMS", strings.Join(c.Auth.UserIDClaims, ","), "userId,sub"},
		{"JWT_EMAIL_CLAIM", c.Auth.EmailClaim, "email"},
		{"JWT_REQUIRE_VERIFIED_EMAIL", c.Auth.RequireVerifiedEmail, true},
		{"ENGINE_TRANSPORT", c.Transport, "redis-streams"},
		{"ENGINE_REQUEST_STREAM", c.Bus.RequestStream, "engine:requests"},
		{"ENGINE_REPLY_STREAM", c.Bus.ReplyStream, "engine:replies"},
		{"ENGINE_REPLY_TIMEOUT", c.UseCase.ReplyTimeout, 5 * time.Second},
		{"ENGINE_SEND_TIMEOUT", c.Bus.SendTimeout, 2 * time.Second},
		{"ENGINE_REQUEST_MAXLEN", c.Bus.RequestMaxLen, int64(1000000)},
		{"ENGINE_MAX_WAITING", c.UseCase.MaxWaiting, 20000},
		{"SHUTDOWN_TIMEOUT", c.HTTP.ShutdownTimeout, 15 * time.Second},
		{"LOG_LEVEL", c.Log.Level, "info"},
		{"LOG_FORMAT", c.Log.Format, "json"},
		{"LOG_FLUSH_INTERVAL", c.Log.FlushInterval, 100 * time.Millisecond},
		{"REDIS_MAX_FLUSH_DELAY", c.Redis.MaxFlushDelay, 250 * time.Microsecond},
		{"HTTP_PARK_ABOVE", c.HTTP.ParkAbove, 256},
		{"HTTP_READ_HEADER_TIMEOUT", c.HTTP.ReadHeaderTimeout, 5 * time.Second},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

// TestLoadRefuses checks that every bad value is refused with an error that
// names its variable.
func TestLoadRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		set  map[string]string
		drop []string
		name string // the variable the error must name
	}{
		{set: map[string]string{"JWKS_REFRESH": "soon"}, name: "JWKS_REFRESH"},
		{set: map[string]string{"JWKS_MIN_REFRESH": "0s"}, name: "JWKS_MIN_REFRESH"},
		{set: map[string]string{"JWKS_ALLOW_HTTP": "perhaps"}, name: "JWKS_ALLOW_HTTP"},
		{set: map[string]string{"JWKS_URL": "ftp://idp/jwks"}, name: "JWKS_URL"},
		{set: map[string]string{"JWKS_URL": "http://idp.example.com/jwks"}, name: "JWKS_URL"},
		{set: map[string]string{"JWKS_TIMEOUT": "-1s"}, name: "JWKS_TIMEOUT"},
		{drop: []string{"JWKS_URL"}, name: "JWKS_URL"},
		{drop: []string{"JWT_ISSUER"}, name: "JWT_ISSUER"},
		{drop: []string{"JWT_AUDIENCE"}, name: "JWT_AUDIENCE"},
		{set: map[string]string{"JWT_HS256_SECRET": "short"}, name: "JWT_HS256_SECRET"},
		{set: map[string]string{"JWT_ALGORITHMS": "ES256,none"}, name: "JWT_ALGORITHMS"},
		{set: map[string]string{"JWT_LEEWAY": "6m"}, name: "JWT_LEEWAY"},
		{set: map[string]string{"JWT_LEEWAY": "-1s"}, name: "JWT_LEEWAY"},
		{set: map[string]string{"JWT_REQUIRE_EXP": "yes please"}, name: "JWT_REQUIRE_EXP"},
		{set: map[string]string{"JWT_USER_ID_CLAIMS": " , "}, name: "JWT_USER_ID_CLAIMS"},
		{set: map[string]string{"JWT_EMAIL_CLAIM": ""}, name: "JWT_EMAIL_CLAIM"},
		{set: map[string]string{"ENGINE_TRANSPORT": "carrier-pigeon"}, name: "ENGINE_TRANSPORT"},
		{set: map[string]string{"ENGINE_REQUEST_STREAM": ""}, name: "ENGINE_REQUEST_STREAM"},
		{set: map[string]string{"ENGINE_REPLY_STREAM": "engine:requests"}, name: "ENGINE_REPLY_STREAM"},
		{set: map[string]string{"ENGINE_REPLY_TIMEOUT": "0s"}, name: "ENGINE_REPLY_TIMEOUT"},
		{set: map[string]string{"ENGINE_SEND_TIMEOUT": "5ms"}, name: "ENGINE_SEND_TIMEOUT"},
		{set: map[string]string{"ENGINE_SEND_TIMEOUT": "2m"}, name: "ENGINE_SEND_TIMEOUT"},
		{set: map[string]string{"ENGINE_REQUEST_MAXLEN": "many"}, name: "ENGINE_REQUEST_MAXLEN"},
		{set: map[string]string{"ENGINE_MAX_WAITING": "0"}, name: "ENGINE_MAX_WAITING"},
		{set: map[string]string{"REDIS_URL": "http://127.0.0.1:6379"}, name: "REDIS_URL"},
		{set: map[string]string{"REDIS_URL": ""}, name: "REDIS_URL"},
		{set: map[string]string{"REDIS_TLS_CERT_FILE": "/c.pem"}, name: "REDIS_TLS_CERT_FILE"},
		{set: map[string]string{"HTTP_ADDR": ""}, name: "HTTP_ADDR"},
		{set: map[string]string{"SHUTDOWN_TIMEOUT": "5s"}, name: "SHUTDOWN_TIMEOUT"},
		{set: map[string]string{"SHUTDOWN_DELAY": "-1s"}, name: "SHUTDOWN_DELAY"},
		{set: map[string]string{"HTTP_MAX_HEADER_BYTES": "10"}, name: "HTTP_MAX_HEADER_BYTES"},
		{set: map[string]string{"CORS_ALLOWED_ORIGINS": "not an origin"}, name: "CORS_ALLOWED_ORIGINS"},
		{set: map[string]string{"LOG_LEVEL": "chatty"}, name: "LOG_LEVEL"},
		{set: map[string]string{"ENGINE_COALESCE": "sometimes"}, name: "ENGINE_COALESCE"},
		{set: map[string]string{"ENGINE_DURABLE_SEND": "fsync"}, name: "ENGINE_DURABLE_SEND"},
		{set: map[string]string{"ENGINE_DURABLE_SEND": "aof", "ENGINE_TRANSPORT": "memory"}, name: "ENGINE_DURABLE_SEND"},
		{set: map[string]string{"INSTANCE_ID": "a{b}"}, name: "INSTANCE_ID"},
		{set: map[string]string{"INSTANCE_ID": "a b"}, name: "INSTANCE_ID"},
		{set: map[string]string{"ENGINE_REPLY_STREAM": "r:{instance}:{instance}"}, name: "ENGINE_REPLY_STREAM"},
		{set: map[string]string{"LOG_FORMAT": "xml"}, name: "LOG_FORMAT"},
		{set: map[string]string{"LOG_FLUSH_INTERVAL": "-1s"}, name: "LOG_FLUSH_INTERVAL"},
		{set: map[string]string{"LOG_FLUSH_INTERVAL": "2m"}, name: "LOG_FLUSH_INTERVAL"},
		{set: map[string]string{"LOG_FLUSH_INTERVAL": "often"}, name: "LOG_FLUSH_INTERVAL"},
		{set: map[string]string{"REDIS_MAX_FLUSH_DELAY": "11ms"}, name: "REDIS_MAX_FLUSH_DELAY"},
		{set: map[string]string{"REDIS_MAX_FLUSH_DELAY": "-1us"}, name: "REDIS_MAX_FLUSH_DELAY"},
		{set: map[string]string{"HTTP_PARK_ABOVE": "-2"}, name: "HTTP_PARK_ABOVE"},
		{set: map[string]string{"HTTP_READ_HEADER_TIMEOUT": "0s"}, name: "HTTP_READ_HEADER_TIMEOUT"},
		{set: map[string]string{"HTTP_READ_HEADER_TIMEOUT": "6m"}, name: "HTTP_READ_HEADER_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := minimal()
			for k, v := range tt.set {
				e[k] = v
			}
			for _, k := range tt.drop {
				delete(e, k)
			}
			_, err := config.Load(env(e))
			if err == nil || !strings.Contains(err.Error(), tt.name+":") {
				t.Fatalf("Load(%v) err = %v, want one naming %s", tt.set, err, tt.name)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	t.Parallel()
	e := minimal()
	e["LOG_LEVEL"], e["LOG_FORMAT"], e["ENGINE_MAX_WAITING"] = "x", "y", "-1"
	_, err := config.Load(env(e))
	for _, name := range []string{"LOG_LEVEL", "LOG_FORMAT", "ENGINE_MAX_WAITING"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("err = %v, want it to name %s", err, name)
		}
	}
}

func TestLoadAccepts(t *testing.T) {
	t.Parallel()
	for name, e := range map[string]map[string]string{
		"HS256 only": {"JWT_HS256_SECRET": strings.Repeat("s", 32)},
		"both during a migration": {"JWT_HS256_SECRET": strings.Repeat("s", 32), "JWKS_URL": "file:///etc/jwks.json",
			"JWT_ISSUER": "*", "JWT_AUDIENCE": "*"},
		"http on loopback":      {"JWKS_URL": "http://127.0.0.1:9999/jwks", "JWT_ISSUER": "i", "JWT_AUDIENCE": "a"},
		"http with opt-in":      {"JWKS_URL": "http://idp.internal/jwks", "JWKS_ALLOW_HTTP": "true", "JWT_ISSUER": "i", "JWT_AUDIENCE": "a"},
		"memory transport":      {"JWT_HS256_SECRET": strings.Repeat("s", 32), "ENGINE_TRANSPORT": "memory", "REDIS_URL": ""},
		"cluster URL":           {"JWT_HS256_SECRET": strings.Repeat("s", 32), "REDIS_URL": "redis://127.0.0.1:7000?addr=127.0.0.1:7001"},
		"CORS origins and algs": {"JWT_HS256_SECRET": strings.Repeat("s", 32), "CORS_ALLOWED_ORIGINS": "https://a.example, http://localhost:3000", "JWT_ALGORITHMS": "RS256, ES256"},
		"leeway at its maximum": {"JWT_HS256_SECRET": strings.Repeat("s", 32), "JWT_LEEWAY": "5m"},
		"custom claims":         {"JWT_HS256_SECRET": strings.Repeat("s", 32), "JWT_USER_ID_CLAIMS": "uid", "JWT_EMAIL_CLAIM": "mail"},
	} {
		if _, err := config.Load(env(e)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	t.Parallel()
	e := minimal()
	e["JWT_HS256_SECRET"] = "0123456789abcdef0123456789abcdef-TOPSECRET"
	e["REDIS_URL"] = "redis://user:hunter2-TOPSECRET@127.0.0.1:6379/0"
	c, err := config.Load(env(e))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(c)
	eff, _ := json.Marshal(c.Effective())
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), string(js), string(eff)} {
		if strings.Contains(s, "TOPSECRET") {
			t.Fatalf("secret printed: %s", s)
		}
	}
	if c.Auth.HS256Secret.Reveal() != e["JWT_HS256_SECRET"] {
		t.Fatal("Reveal lost the secret")
	}
	if got := config.RedactedURL(e["REDIS_URL"]); strings.Contains(got, "hunter2") {
		t.Fatalf("RedactedURL = %s", got)
	}
	if got := c.Effective()["REDIS_URL"]; got != "redis://user:xxxxx@127.0.0.1:6379/0" {
		t.Errorf("effective REDIS_URL = %q, want the URL with its password masked", got)
	}
	if got := c.Effective()["JWT_LEEWAY"]; got != "30s" {
		t.Errorf("effective JWT_LEEWAY = %q, want the default 30s", got)
	}
}

func TestFlagsOverrideEnv(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e := minimal()
	e["HTTP_ADDR"] = ":1111"
	e["LOG_LEVEL"] = "debug"
	lookup, rest, err := config.WithFlags(fs, []string{"--http-addr=:2222", "--engine-reply-timeout", "2s", "extra"}, env(e))
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(lookup)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != ":2222" || c.UseCase.ReplyTimeout != 2*time.Second || c.Log.Level != "debug" {
		t.Fatalf("got addr %s, timeout %s, level %s", c.HTTP.Addr, c.UseCase.ReplyTimeout, c.Log.Level)
	}
	if len(rest) != 1 || rest[0] != "extra" {
		t.Fatalf("rest = %q", rest)
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	e := minimal()
	e["JWT_ISSUER"], e["JWT_AUDIENCE"] = "*", "*"
	c, err := config.Load(env(e))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 2 {
		t.Fatalf("warnings = %q, want iss and aud", w)
	}
}

// FuzzLoad feeds arbitrary values to every variable: Load never panics, and
// whatever it accepts passes Validate.
func FuzzLoad(f *testing.F) {
	f.Add("JWT_LEEWAY", "30s")
	f.Add("ENGINE_MAX_WAITING", "-9223372036854775808")
	f.Add("JWKS_URL", "http://[::1]:80/jwks")
	f.Add("REDIS_URL", "redis://%zz")
	f.Add("CORS_ALLOWED_ORIGINS", "*,,https://x")
	f.Fuzz(func(t *testing.T, name, value string) {
		e := minimal()
		e[name] = value
		c, err := config.Load(env(e))
		if err == nil && len(c.Validate()) != 0 {
			t.Fatalf("Load accepted %s=%q but Validate refuses it", name, value)
		}
	})
}

func TestInstanceReplyStream(t *testing.T) {
	t.Parallel()
	e := minimal()
	e["ENGINE_REPLY_STREAM"] = "engine:replies:{instance}"
	c, err := config.Load(env(e))
	if err != nil {
		t.Fatal(err)
	}
	c = c.WithInstanceID("web{1} a", 42)
	if got := c.Bus.ReplyStreamName(); got != "engine:replies:web-1--a-42" {
		t.Errorf("ReplyStreamName() = %q", got)
	}
	if !c.Bus.PerInstanceReplies() || c.Effective()["INSTANCE_ID"] != "web-1--a-42" {
		t.Errorf("per-instance %v, effective %q", c.Bus.PerInstanceReplies(), c.Effective()["INSTANCE_ID"])
	}
	e["INSTANCE_ID"] = "pod-7"
	c, _ = config.Load(env(e))
	if got := c.WithInstanceID("host", 1).Bus.ReplyStreamName(); got != "engine:replies:pod-7" {
		t.Errorf("with INSTANCE_ID: %q", got)
	}
	e["ENGINE_REPLY_STREAM"] = "engine:replies"
	c, _ = config.Load(env(e))
	if c.Bus.PerInstanceReplies() || c.Bus.ReplyStreamName() != "engine:replies" {
		t.Error("a stream without the placeholder is shared")
	}
}
