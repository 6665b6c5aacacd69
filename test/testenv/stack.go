package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Issuer and Audience are those of the tokens UserToken mints and of the
// services ServiceEnv configures; EnsurePath is the endpoint under test.
const (
	Issuer     = "https://idp.test/"
	Audience   = "ensure-user"
	EnsurePath = "/api/v1/auth/ensure-user"
)

// IdP is the identity provider of one test: an ES256 signing key, kid
// "key-1", published by a local JWKS server.
type IdP struct {
	*JWKSServer
	Key *JWKSKey
}

// NewIdP generates the key and starts its JWKS server, stopped at cleanup.
func NewIdP(t testing.TB) *IdP {
	t.Helper()
	key := NewJWKSKey(t, "ES256", "key-1")
	return &IdP{JWKSServer: NewJWKSServer(t, key), Key: key}
}

// UserToken mints a token of the key valid for an hour, from Issuer to
// Audience, for user with email user@example.com; extra claims are set over
// those, or removed when nil.
func (k *JWKSKey) UserToken(t testing.TB, user string, extra ...map[string]any) string {
	t.Helper()
	claims := TokenClaims(time.Now(), Issuer, Audience)
	claims["sub"], claims["email"] = user, user+"@example.com"
	for _, e := range extra {
		for name, v := range e {
			if v == nil {
				delete(claims, name)
			} else {
				claims[name] = v
			}
		}
	}
	return k.MintToken(t, claims)
}

// ServiceEnv is the environment of an ensure-user instance on the Redis at
// redisURL that trusts p: the key set refreshed at most every second, a 2 s
// reply timeout, a 10 s shutdown timeout; env adds to it and wins.
func (p *IdP) ServiceEnv(redisURL string, env map[string]string) map[string]string {
	e := map[string]string{
		"REDIS_URL":            redisURL,
		"JWKS_URL":             p.URL,
		"JWKS_MIN_REFRESH":     "1s",
		"JWT_ISSUER":           Issuer,
		"JWT_AUDIENCE":         Audience,
		"ENGINE_REPLY_TIMEOUT": "2s",
		"SHUTDOWN_TIMEOUT":     "10s",
	}
	maps.Copy(e, env)
	return e
}

// RequireReady waits up to timeout until the service is ready, and fails t
// when it is not.
func (s *Service) RequireReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatalf("the service is not ready: %v", err)
	}
}

// CheckOutput makes t fail at cleanup when the service printed something
// that looks like a JWT (tokens must never reach the logs), or logged an
// error that repeats a layer's context ("send: send: ..."): each layer wraps
// an error once, with its own context only. The cleanup stops the service
// first, so that its buffered lines are out.
func (s *Service) CheckOutput(t testing.TB) {
	t.Cleanup(func() {
		s.Stop(t, 30*time.Second)
		out := s.Output()
		if strings.Contains(out, "eyJ") {
			t.Errorf("service output contains something that looks like a JWT")
		}
		for _, line := range strings.Split(out, "\n") {
			var l struct {
				Error string `json:"error"`
			}
			if json.Unmarshal([]byte(line), &l) != nil || l.Error == "" {
				continue
			}
			if seg, ok := RepeatedContext(l.Error); ok {
				t.Errorf("logged error repeats %q: %s", seg, l.Error)
			}
		}
	})
}

// RepeatedContext reports a segment that an error message (segments joined
// by ": ", as fmt.Errorf("context: %w") builds them) holds twice.
func RepeatedContext(msg string) (string, bool) {
	seen := map[string]bool{}
	for _, seg := range strings.Split(msg, ": ") {
		if seen[seg] {
			return seg, true
		}
		seen[seg] = true
	}
	return "", false
}

// Metric reads one series from the service's /metrics (see Scrape).
func (s *Service) Metric(t testing.TB, series string) float64 {
	t.Helper()
	return Scrape(t, s.URL+"/metrics", series)
}

// Scrape reads one series from the Prometheus endpoint url, written as it
// appears there (see ScrapeValue); 0 when absent.
func Scrape(t testing.TB, url, series string) float64 {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	return ScrapeValue(t, resp.Body, series)
}

// Answer is one HTTP exchange as a test sees it.
type Answer struct {
	Req    *http.Request
	Status int
	Header http.Header
	Body   string
	Start  time.Time
	Took   time.Duration
	Err    error // transport error; Status is 0
}

// String describes a for failure messages: status, body and time, or the
// transport error.
func (a Answer) String() string {
	if a.Err != nil {
		return fmt.Sprintf("error after %s: %v", a.Took.Round(time.Millisecond), a.Err)
	}
	return fmt.Sprintf("%d %s after %s", a.Status, a.Body, a.Took.Round(time.Millisecond))
}

// EnsureRequest is a POST to the ensure-user endpoint of the service at base
// with the bearer token ("" for no Authorization header).
func EnsureRequest(ctx context.Context, base, token string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+EnsurePath, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

// Exchange sends req and reads the whole answer, timing it. It never stops
// the test, so any goroutine may call it; Check validates the answer.
func Exchange(client *http.Client, req *http.Request) Answer {
	a := Answer{Req: req, Start: time.Now()}
	resp, err := client.Do(req)
	if err != nil {
		a.Took, a.Err = time.Since(a.Start), err
		return a
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	a.Took = time.Since(a.Start)
	if err != nil {
		a.Err = err
		return a
	}
	a.Status, a.Header, a.Body = resp.StatusCode, resp.Header, string(b)
	return a
}

// Check validates a against api/openapi.yaml (see CheckOpenAPI), unless it
// is a transport error.
func (a Answer) Check(t testing.TB) {
	t.Helper()
	if a.Err == nil {
		CheckOpenAPI(t, a.Req, a.Status, a.Header, []byte(a.Body))
	}
}

// Ensure calls the ensure-user endpoint of the service at base with the
// bearer token ("" for none) and validates the answer against
// api/openapi.yaml. Safe to call from any goroutine: it never stops the
// test, and reports a mismatch with t.Errorf.
func Ensure(ctx context.Context, t testing.TB, client *http.Client, base, token string) Answer {
	req, err := EnsureRequest(ctx, base, token)
	if err != nil {
		return Answer{Err: err}
	}
	a := Exchange(client, req)
	a.Check(t)
	return a
}

// EngineSim is a running engine-sim binary.
type EngineSim struct {
	*Process
	// MetricsURL is the address of its /metrics.
	MetricsURL string
}

// StartEngineSim runs the engine-sim binary on redisURL with env over
// LOG_LEVEL=info and METRICS_ADDR on a free loopback port, and waits until
// it runs.
func StartEngineSim(t testing.TB, redisURL string, env map[string]string) *EngineSim {
	t.Helper()
	e := map[string]string{"REDIS_URL": redisURL, "LOG_LEVEL": "info", "METRICS_ADDR": "127.0.0.1:0"}
	maps.Copy(e, env)
	p := Start(t, BuildBinary(t, "./cmd/engine-sim"), e)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := p.WaitLog(ctx, "metrics listening")
	if err == nil {
		_, err = p.WaitLog(ctx, "engine running")
	}
	if err != nil {
		t.Fatalf("engine-sim did not start: %v\n%s", err, p.Output())
	}
	addr, _ := l["addr"].(string)
	return &EngineSim{Process: p, MetricsURL: "http://" + addr + "/metrics"}
}
