// Package e2e drives the real ensure-user binary over real HTTP, against a
// real redis-server, a JWKS served over HTTP, and an Engine reading the real
// request stream. Every answer is validated against api/openapi.yaml.
package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

const (
	endpoint = testenv.EnsurePath
	issuer   = testenv.Issuer
	audience = testenv.Audience
)

// Bodies of the contract, byte for byte.
const (
	bodyConfirmed      = `{"success":true,"message":"User ensured in Engine and DBStorage"}`
	bodyInitiated      = `{"success":true,"message":"User creation initiated"}`
	bodyNoToken        = `{"error":"No token provided."}`
	bodyInvalidToken   = `{"error":"Invalid or expired token."}`
	bodyInvalidPayload = `{"error":"Invalid token payload."}`
	bodyEngineFailed   = `{"error":"Failed to ensure user, but request was sent to Engine"}`
	bodyNotSent        = `{"error":"Engine unavailable: user creation request was not sent."}`
	bodyBusy           = `{"error":"Service busy: user creation request was not sent."}`
	bodyVerifierDown   = `{"error":"Token verification unavailable."}`
)

// stack is one service with its own Redis, identity provider and Engine.
type stack struct {
	t      *testing.T
	redis  *testenv.Redis
	idp    *testenv.IdP
	key    *testenv.JWKSKey // idp.Key
	svc    *testenv.Service
	engine *testenv.ScriptedEngine
	client *http.Client
}

type stackOptions struct {
	env         map[string]string
	engineDelay time.Duration
	noEngine    bool
	idpDown     bool
	redisOpts   []testenv.RedisOption
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	s := &stack{t: t, client: &http.Client{Timeout: 30 * time.Second}}
	s.redis = testenv.StartRedis(t, o.redisOpts...)
	s.idp = testenv.NewIdP(t)
	s.key = s.idp.Key
	if o.idpDown {
		s.idp.Fail(http.StatusServiceUnavailable)
	}
	if !o.noEngine {
		s.engine = testenv.StartScriptedEngine(t, s.redis.Addr(), testenv.WithEngineDelay(o.engineDelay))
	}
	s.svc = testenv.StartService(t, s.idp.ServiceEnv(s.redis.URL(), o.env))
	if !o.idpDown {
		s.svc.RequireReady(t, 30*time.Second)
	}
	s.svc.CheckOutput(t)
	return s
}

// token mints a valid ES256 token for user id and email.
func (s *stack) token(userID, email string, extra ...map[string]any) string {
	return s.key.UserToken(s.t, userID, append([]map[string]any{{"email": email}}, extra...)...)
}

// post calls the endpoint with the given Authorization header ("" for none)
// and returns status, headers and body, validated against the OpenAPI doc.
func (s *stack) post(auth string, header ...string) (int, http.Header, string) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.svc.URL+endpoint, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, body := testenv.Do(s.t, s.client, req)
	return resp.StatusCode, resp.Header, string(body)
}

func (s *stack) ensure(userID string) (int, http.Header, string) {
	s.t.Helper()
	return s.post("Bearer " + s.token(userID, userID+"@example.com"))
}

func expect(t *testing.T, what string, status int, header http.Header, body string, wantStatus int, wantBody string) {
	t.Helper()
	if status != wantStatus || body != wantBody {
		t.Fatalf("%s: got %d %s, want %d %s", what, status, body, wantStatus, wantBody)
	}
	if header.Get("Content-Type") != "application/json" || header.Get("Cache-Control") != "no-store" || header.Get("X-Request-ID") == "" {
		t.Errorf("%s: headers %v lack JSON content type, no-store or X-Request-ID", what, header)
	}
}

// TestContract drives every row of the HTTP contract table that a healthy
// stack can produce, over real HTTP against the real binary.
func TestContract(t *testing.T) {
	t.Parallel()
	testContract(t, map[string]string{"ENGINE_REPLY_TIMEOUT": "1s", "HTTP_PARK_ABOVE": "-1"})
}

// TestContractParked drives the same rows with every request parked
// (HTTP_PARK_ABOVE=0): the answers must be the same.
func TestContractParked(t *testing.T) {
	t.Parallel()
	testContract(t, map[string]string{"ENGINE_REPLY_TIMEOUT": "1s", "HTTP_PARK_ABOVE": "0"})
}

func testContract(t *testing.T, env map[string]string) {
	s := newStack(t, stackOptions{env: env})

	rows := []struct {
		name   string
		auth   func() string
		status int
		body   string
		header map[string]string
	}{
		{"confirmed: status ok", func() string { return "Bearer " + s.token("ok-1", "ok-1@example.com") }, 200, bodyConfirmed, nil},
		{"confirmed: lower-case scheme", func() string { return "bearer " + s.token("ok-2", "ok-2@example.com") }, 200, bodyConfirmed, nil},
		{"confirmed: legacy Engine, new user", func() string { return "Bearer " + s.token("legacy-1", "l@example.com") }, 200, bodyConfirmed, nil},
		{"confirmed: status exists", func() string { return "Bearer " + s.token("exists-1", "e@example.com") }, 200, bodyConfirmed, nil},
		{"initiated: status pending", func() string { return "Bearer " + s.token("pending-1", "p@example.com") }, 202, bodyInitiated, nil},
		{"initiated: no reply in time", func() string { return "Bearer " + s.token("silent-1", "s@example.com") }, 202, bodyInitiated, nil},
		{"no token: no header", func() string { return "" }, 401, bodyNoToken, map[string]string{"WWW-Authenticate": "Bearer"}},
		{"no token: Bearer alone", func() string { return "Bearer " }, 401, bodyNoToken, map[string]string{"WWW-Authenticate": "Bearer"}},
		{"no token: Basic", func() string { return "Basic dXNlcjpwYXNz" }, 401, bodyNoToken, map[string]string{"WWW-Authenticate": "Bearer"}},
		{"invalid token: garbage", func() string { return "Bearer not-a-jwt" }, 401, bodyInvalidToken,
			map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`}},
		{"invalid token: expired", func() string {
			return "Bearer " + s.token("ok-3", "x@example.com", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})
		}, 401, bodyInvalidToken, map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`}},
		{"invalid token: wrong audience", func() string {
			return "Bearer " + s.token("ok-4", "x@example.com", map[string]any{"aud": "someone-else"})
		}, 401, bodyInvalidToken, map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`}},
		{"invalid token: unknown key", func() string {
			other := testenv.NewJWKSKey(t, "ES256", "key-1")
			c := testenv.TokenClaims(time.Now(), issuer, audience)
			c["sub"], c["email"] = "ok-5", "x@example.com"
			return "Bearer " + other.MintToken(t, c)
		}, 401, bodyInvalidToken, map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`}},
		{"invalid payload: no email", func() string {
			return "Bearer " + s.token("ok-6", "", map[string]any{"email": nil})
		}, 400, bodyInvalidPayload, nil},
		{"invalid payload: email not an addr-spec", func() string { return "Bearer " + s.token("ok-7", "not-an-email") }, 400, bodyInvalidPayload, nil},
		{"invalid payload: email not verified", func() string {
			return "Bearer " + s.token("ok-8", "x@example.com", map[string]any{"email_verified": false})
		}, 400, bodyInvalidPayload, nil},
		{"engine failed: status error", func() string { return "Bearer " + s.token("error-1", "x@example.com") }, 502, bodyEngineFailed, nil},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			status, header, body := s.post(r.auth())
			expect(t, r.name, status, header, body, r.status, r.body)
			for k, v := range r.header {
				if got := header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}

	t.Run("the command carries exactly the token's identity", func(t *testing.T) {
		id, email := `ok-"quoted" \ ünï`, "o'neil+tag@example.co.uk"
		tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		status, _, _ := s.post("Bearer "+s.token(id, email), "traceparent", tp, "tracestate", "vendor=1")
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		cmds := s.engine.Commands(id)
		if len(cmds) != 1 {
			t.Fatalf("engine saw %d commands for %q, want 1", len(cmds), id)
		}
		c := cmds[0]
		if c.Function != "createUser" || c.UserID != id || c.UserEmail != email || c.ReplyTo != "engine:replies" ||
			c.TraceParent != tp || c.TraceState != "vendor=1" {
			t.Errorf("command = %+v", c)
		}
	})

	t.Run("every call sends a command", func(t *testing.T) {
		for range 3 {
			if status, _, _ := s.ensure("ok-again"); status != 200 {
				t.Fatalf("status %d", status)
			}
		}
		if n := len(s.engine.Commands("ok-again")); n != 3 {
			t.Fatalf("engine saw %d commands, want 3", n)
		}
	})

	t.Run("other methods and paths are JSON errors", func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodPatch, http.MethodHead} {
			req, _ := http.NewRequest(m, s.svc.URL+endpoint, nil)
			resp, body := testenv.Do(t, s.client, req)
			if resp.StatusCode != 405 {
				t.Errorf("%s: %d %s, want 405", m, resp.StatusCode, body)
			}
		}
		req, _ := http.NewRequest(http.MethodPost, s.svc.URL+"/api/v1/auth/nope", nil)
		if resp, body := testenv.Do(t, s.client, req); resp.StatusCode != 404 || string(body) != `{"error":"Not Found"}` {
			t.Errorf("unknown path: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("a body over 1 KiB is refused with 413", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, s.svc.URL+endpoint, strings.NewReader(strings.Repeat("x", 2048)))
		req.Header.Set("Authorization", "Bearer "+s.token("ok-body", "b@example.com"))
		if resp, body := testenv.Do(t, s.client, req); resp.StatusCode != 413 {
			t.Errorf("got %d %s", resp.StatusCode, body)
		}
		if n := len(s.engine.Commands("ok-body")); n != 0 {
			t.Errorf("refused request sent %d commands", n)
		}
	})

	t.Run("a request id from the gateway is echoed", func(t *testing.T) {
		_, header, _ := s.post("Bearer "+s.token("ok-rid", "r@example.com"), "X-Request-ID", "gw-42")
		if header.Get("X-Request-ID") != "gw-42" {
			t.Errorf("X-Request-ID = %q", header.Get("X-Request-ID"))
		}
	})

	t.Run("operations endpoints", func(t *testing.T) {
		for _, p := range []string{"/livez", "/readyz", "/openapi.yaml"} {
			req, _ := http.NewRequest(http.MethodGet, s.svc.URL+p, nil)
			if resp, body := testenv.Do(t, s.client, req); resp.StatusCode != 200 {
				t.Errorf("%s: %d %s", p, resp.StatusCode, body)
			}
		}
	})
}

// TestNoCrossTalk is the test the legacy endpoint fails: 1,000 concurrent
// requests for distinct users, the Engine answering in random order, each
// user's answer decided by its own reply. A reply handed to the wrong request
// would show as a wrong status.
func TestNoCrossTalk(t *testing.T) {
	t.Parallel()
	// Beyond 100 requests in flight the rest are parked: both paths serve
	// the crowd at once.
	s := newStack(t, stackOptions{engineDelay: 300 * time.Millisecond, env: map[string]string{
		"ENGINE_REPLY_TIMEOUT": "20s", "SHUTDOWN_TIMEOUT": "30s", "HTTP_PARK_ABOVE": "100",
		// 1,000 new connections at once under -race: a connection's
		// goroutine may first run seconds after its client sent the headers,
		// and an XADD may take longer than its 2 s default bound (a 502).
		"HTTP_READ_HEADER_TIMEOUT": "30s", "ENGINE_SEND_TIMEOUT": "20s"}})
	const n = 1000
	kinds := []struct {
		prefix string
		status int
		body   string
	}{
		{"ok", 200, bodyConfirmed},
		{"pending", 202, bodyInitiated},
		{"error", 502, bodyEngineFailed},
	}
	tokens := make([]string, n)
	want := make([]int, n)
	for i := range n {
		k := rand.N(len(kinds))
		want[i] = k
		id := kinds[k].prefix + "-" + strconv.Itoa(i)
		tokens[i] = s.token(id, id+"@example.com")
	}
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, s.svc.URL+endpoint, nil)
			req.Header.Set("Authorization", "Bearer "+tokens[i])
			resp, body := testenv.Do(t, client, req)
			k := kinds[want[i]]
			if resp.StatusCode != k.status || string(body) != k.body {
				errs <- fmt.Sprintf("request %d (%s): got %d %s, want %d", i, k.prefix, resp.StatusCode, body, k.status)
			}
		})
	}
	wg.Wait()
	close(errs)
	bad := 0
	for e := range errs {
		if bad++; bad <= 10 {
			t.Error(e)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d requests got another request's answer", bad, n)
	}
	if got := s.engine.Total(); got != n {
		t.Errorf("engine saw %d commands, want %d", got, n)
	}
	if parked := s.svc.Metric(t, "ensure_user_http_parked_total"); parked == 0 || parked == n {
		t.Errorf("%v of %d requests were parked: the test meant both paths to serve", parked, n)
	}
}
