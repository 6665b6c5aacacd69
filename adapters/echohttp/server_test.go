package echohttp_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
	"github.com/ensure-user/ensure-user/test/fake"
)

const path = "/api/v1/auth/ensure-user"

// stub is a use case that answers what the test says.
type stub struct {
	res   ensureuser.Result
	err   error
	in    chan ensureuser.Input
	panic bool
}

func (s *stub) Start(ctx context.Context, in ensureuser.Input) (ensureuser.Pending, error) {
	if s.in != nil {
		s.in <- in
	}
	if s.panic {
		panic("boom")
	}
	return ensureuser.Pending{}, nil
}

func (s *stub) Wait(context.Context, *ensureuser.Pending) (ensureuser.Result, error) {
	return s.res, s.err
}

func newServer(t *testing.T, uc echohttp.EnsureUser, mutate ...func(*echohttp.Config, *echohttp.Options)) (*echohttp.Server, *observer.ObservedLogs, *prometheus.Registry) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	reg := prometheus.NewRegistry()
	cfg := echohttp.Config{Addr: "127.0.0.1:0", MaxHeaderBytes: 16384}
	opts := echohttp.Options{ReplyTimeout: 5 * time.Second, Registry: reg}
	for _, m := range mutate {
		m(&cfg, &opts)
	}
	s, err := echohttp.New(cfg, zap.New(core), uc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, logs, reg
}

func do(h http.Handler, method, target string, header map[string]string, body io.Reader) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, body)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestContractTable drives every row of the HTTP contract through the real
// use case, with fake ports behind it.
func TestContractTable(t *testing.T) {
	t.Parallel()
	good := domain.Identity{UserID: "u1", Email: "u1@example.com"}
	tests := []struct {
		name       string
		auth       string // Authorization header; "-" for none
		verdict    error
		identity   domain.Identity
		sendErr    error
		maxWaiting int
		reply      *domain.Reply // nil: let the reply time out
		notRecv    bool
		status     int
		body       string
		header     map[string]string
	}{
		{name: "confirmed", auth: "Bearer t", identity: good, reply: &domain.Reply{Status: "ok"}, status: 200,
			body: `{"success":true,"message":"User ensured in Engine and DBStorage"}`},
		{name: "scheme is case-insensitive", auth: "bearer t", identity: good, reply: &domain.Reply{Status: "exists"}, status: 200,
			body: `{"success":true,"message":"User ensured in Engine and DBStorage"}`},
		{name: "BEARER with extra blanks", auth: "BEARER   t ", identity: good, reply: &domain.Reply{Message: "u1"}, status: 200,
			body: `{"success":true,"message":"User ensured in Engine and DBStorage"}`},
		{name: "pending", auth: "Bearer t", identity: good, reply: &domain.Reply{Status: "pending"}, status: 202,
			body: `{"success":true,"message":"User creation initiated"}`},
		{name: "no reply in time", auth: "Bearer t", identity: good, status: 202,
			body: `{"success":true,"message":"User creation initiated"}`},
		{name: "no header", auth: "-", status: 401, body: `{"error":"No token provided."}`,
			header: map[string]string{"WWW-Authenticate": "Bearer"}},
		{name: "empty header", auth: "", status: 401, body: `{"error":"No token provided."}`,
			header: map[string]string{"WWW-Authenticate": "Bearer"}},
		{name: "Bearer without token", auth: "Bearer ", status: 401, body: `{"error":"No token provided."}`,
			header: map[string]string{"WWW-Authenticate": "Bearer"}},
		{name: "Bearer alone", auth: "Bearer", status: 401, body: `{"error":"No token provided."}`,
			header: map[string]string{"WWW-Authenticate": "Bearer"}},
		{name: "Basic scheme", auth: "Basic dTpw", status: 401, body: `{"error":"No token provided."}`,
			header: map[string]string{"WWW-Authenticate": "Bearer"}},
		{name: "Bearerx scheme", auth: "Bearerx t", status: 401, body: `{"error":"No token provided."}`,
			header: map[string]string{"WWW-Authenticate": "Bearer"}},
		{name: "invalid token", auth: "Bearer t", verdict: domain.ErrInvalidToken, status: 401,
			body: `{"error":"Invalid or expired token."}`, header: map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`}},
		{name: "invalid payload", auth: "Bearer t", identity: domain.Identity{UserID: "u1", Email: "nope"}, status: 400,
			body: `{"error":"Invalid token payload."}`},
		{name: "engine error", auth: "Bearer t", identity: good, reply: &domain.Reply{Status: "error"}, status: 502,
			body: `{"error":"Failed to ensure user, but request was sent to Engine"}`},
		{name: "reply lost while reader down", auth: "Bearer t", identity: good, notRecv: true, status: 502,
			body: `{"error":"Failed to ensure user, but request was sent to Engine"}`},
		{name: "send outcome unknown", auth: "Bearer t", identity: good, sendErr: domain.ErrSendUnknown, status: 502,
			body: `{"error":"Failed to ensure user, but request was sent to Engine"}`},
		{name: "not sent", auth: "Bearer t", identity: good, sendErr: domain.ErrBusUnavailable, status: 503,
			body: `{"error":"Engine unavailable: user creation request was not sent."}`, header: map[string]string{"Retry-After": "1"}},
		{name: "verifier unavailable", auth: "Bearer t", verdict: domain.ErrVerifierUnavailable, status: 503,
			body: `{"error":"Token verification unavailable."}`, header: map[string]string{"Retry-After": "5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := fake.NewClock()
			bus := fake.NewBus(1)
			bus.FailSends(tt.sendErr)
			bus.SetReceiving(!tt.notRecv)
			v := &fake.Verifier{}
			if tt.verdict != nil {
				v.Refuse("t", tt.verdict)
			} else {
				v.Accept("t", tt.identity)
			}
			uc := ensureuser.New(ensureuser.Config{ReplyTimeout: 5 * time.Second, MaxWaiting: tt.maxWaiting}, v, bus, clock)
			s, _, _ := newServer(t, uc)

			hdr := map[string]string{}
			if tt.auth != "-" {
				hdr["Authorization"] = tt.auth
			}
			recc := make(chan *httptest.ResponseRecorder, 1)
			go func() { recc <- do(s.Handler(), http.MethodPost, path, hdr, nil) }()
			var rec *httptest.ResponseRecorder
			select {
			case rec = <-recc:
			case cmd := <-bus.Sent:
				if tt.reply != nil {
					r := *tt.reply
					r.RequestID = cmd.RequestID
					bus.Reply(r)
				} else {
					if err := clock.BlockUntilContext(context.Background(), 1); err != nil {
						t.Fatal(err)
					}
					clock.Advance(5 * time.Second)
				}
				rec = <-recc
			}
			if rec.Code != tt.status || rec.Body.String() != tt.body {
				t.Fatalf("got %d %s, want %d %s", rec.Code, rec.Body, tt.status, tt.body)
			}
			want := map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"}
			for k, v := range tt.header {
				want[k] = v
			}
			for k, v := range want {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if rec.Header().Get("X-Request-ID") == "" {
				t.Error("no X-Request-ID on the answer")
			}
		})
	}
}

func TestBusyAnswer(t *testing.T) {
	t.Parallel()
	s, _, _ := newServer(t, &stub{err: domain.ErrBusy})
	rec := do(s.Handler(), http.MethodPost, path, map[string]string{"Authorization": "Bearer t"}, nil)
	if rec.Code != 503 || rec.Body.String() != `{"error":"Service busy: user creation request was not sent."}` || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("got %d %s %v", rec.Code, rec.Body, rec.Header())
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	for header, want := range map[string]string{
		"Bearer abc":     "abc",
		"bearer abc":     "abc",
		"BeArEr \tabc\t": "abc",
		"Bearer":         "",
		"Bearer ":        "",
		"Bearer   ":      "",
		"":               "",
		"Basic abc":      "",
		"Bearerabc":      "",
		"Token abc":      "",
		"Bearer a b":     "a b", // the verifier refuses it
	} {
		if got := echohttp.BearerToken(header); got != want {
			t.Errorf("BearerToken(%q) = %q, want %q", header, got, want)
		}
	}
}

func TestOtherMethodsAndPaths(t *testing.T) {
	t.Parallel()
	s, _, _ := newServer(t, &stub{})
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		rec := do(s.Handler(), m, path, nil, nil)
		if rec.Code != 405 {
			t.Errorf("%s: status %d, want 405", m, rec.Code)
		}
		if m != http.MethodHead && rec.Body.String() != `{"error":"Method Not Allowed"}` {
			t.Errorf("%s: body %s", m, rec.Body)
		}
		if rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: content type %q", m, rec.Header().Get("Content-Type"))
		}
	}
	rec := do(s.Handler(), http.MethodPost, "/api/v1/auth/nope", nil, nil)
	if rec.Code != 404 || rec.Body.String() != `{"error":"Not Found"}` || rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("unknown path: %d %s", rec.Code, rec.Body)
	}
}

func TestCORSPreflight(t *testing.T) {
	t.Parallel()
	s, _, _ := newServer(t, &stub{res: ensureuser.Result{Outcome: domain.Confirmed}}, func(c *echohttp.Config, _ *echohttp.Options) {
		c.CORSOrigins = []string{"https://app.example.com"}
	})
	rec := do(s.Handler(), http.MethodOptions, path, map[string]string{
		"Origin":                         "https://app.example.com",
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "authorization",
	}, nil)
	if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("preflight: %d %v", rec.Code, rec.Header())
	}
	if rec.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Error("credentials allowed by default")
	}
	rec = do(s.Handler(), http.MethodOptions, path, map[string]string{
		"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST",
	}, nil)
	if rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin allowed: %v", rec.Header())
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	s, _, _ := newServer(t, &stub{res: ensureuser.Result{Outcome: domain.Confirmed}})
	auth := map[string]string{"Authorization": "Bearer t"}

	rec := do(s.Handler(), http.MethodPost, path, auth, strings.NewReader(strings.Repeat("x", 1025)))
	if rec.Code != 413 || !strings.HasPrefix(rec.Body.String(), `{"error":`) {
		t.Errorf("big body: %d %s", rec.Code, rec.Body)
	}
	req := httptest.NewRequest(http.MethodPost, path, io.NopCloser(strings.NewReader(strings.Repeat("x", 2000))))
	req.ContentLength = -1 // chunked: no length announced
	req.Header.Set("Authorization", "Bearer t")
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Errorf("big chunked body: %d %s", rec.Code, rec.Body)
	}
	rec = do(s.Handler(), http.MethodPost, path, auth, strings.NewReader("{}"))
	if rec.Code != 200 {
		t.Errorf("small body: %d %s", rec.Code, rec.Body)
	}
	rec = do(s.Handler(), http.MethodPost, path, map[string]string{"Authorization": "Bearer " + strings.Repeat("a", 20000)}, nil)
	if rec.Code != 431 || !strings.HasPrefix(rec.Body.String(), `{"error":`) {
		t.Errorf("big header: %d %s", rec.Code, rec.Body)
	}
}

func TestPanicBecomes500(t *testing.T) {
	t.Parallel()
	s, logs, _ := newServer(t, &stub{panic: true})
	rec := do(s.Handler(), http.MethodPost, path, map[string]string{"Authorization": "Bearer t"}, nil)
	if rec.Code != 500 || rec.Body.String() != `{"error":"Internal server error."}` {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if logs.FilterMessage("panic in handler").Len() != 1 {
		t.Errorf("panic not logged: %v", logs.All())
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	in := make(chan ensureuser.Input, 3)
	s, logs, _ := newServer(t, &stub{res: ensureuser.Result{Outcome: domain.Confirmed, UserID: "u1"}, in: in})
	tests := []struct {
		sent string
		keep bool
	}{
		{"gw-123_abc", true},
		{strings.Repeat("r", 128), true},
		{strings.Repeat("r", 129), false},
		{"has space", false},
		{"ctl\x01", false},
	}
	for _, tt := range tests {
		rec := do(s.Handler(), http.MethodPost, path, map[string]string{"Authorization": "Bearer t", "X-Request-ID": tt.sent}, nil)
		<-in
		got := rec.Header().Get("X-Request-ID")
		if tt.keep != (got == tt.sent) || got == "" {
			t.Errorf("sent %q, echoed %q; keep=%v", tt.sent, got, tt.keep)
		}
		line := logs.TakeAll()
		if len(line) != 1 || line[0].ContextMap()["request_id"] != got {
			t.Errorf("log line does not carry the request id %q: %v", got, line)
		}
	}
}

func TestTraceHeadersReachTheUseCase(t *testing.T) {
	t.Parallel()
	in := make(chan ensureuser.Input, 1)
	s, _, _ := newServer(t, &stub{res: ensureuser.Result{Outcome: domain.Confirmed}, in: in})
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	do(s.Handler(), http.MethodPost, path, map[string]string{"Authorization": "Bearer tok", "traceparent": tp, "tracestate": "a=b"}, nil)
	got := <-in
	if got.Token != "tok" || got.Trace.Parent != tp || got.Trace.State != "a=b" {
		t.Fatalf("input = %+v", got)
	}
}

func TestLogLineNeverHoldsTheToken(t *testing.T) {
	t.Parallel()
	s, logs, _ := newServer(t, &stub{err: domain.ErrInvalidToken})
	secret := "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
	do(s.Handler(), http.MethodPost, path, map[string]string{"Authorization": "Bearer " + secret}, nil)
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if strings.Contains(strings.ToLower(k), "token") && k != "outcome" || strings.Contains(toString(v), "eyJ") {
				t.Errorf("log field %s=%v may hold the token", k, v)
			}
		}
	}
	if logs.Len() != 1 || logs.All()[0].ContextMap()["outcome"] != "invalid_token" {
		t.Errorf("want one line with outcome invalid_token, got %v", logs.All())
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return ""
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	var redisErr error = errors.New("dial tcp: connection refused")
	s, _, _ := newServer(t, &stub{}, func(_ *echohttp.Config, o *echohttp.Options) {
		o.Probes = []echohttp.Probe{
			{Name: "jwks", Check: func(context.Context) error { return nil }},
			{Name: "redis", Check: func(context.Context) error { return redisErr }},
		}
	})
	rec := do(s.Handler(), http.MethodGet, "/readyz", nil, nil)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"name":"redis"`) || strings.Contains(rec.Body.String(), `"name":"jwks"`) {
		t.Fatalf("not ready: %d %s", rec.Code, rec.Body)
	}
	redisErr = nil
	if rec := do(s.Handler(), http.MethodGet, "/readyz", nil, nil); rec.Code != 200 {
		t.Fatalf("ready: %d %s", rec.Code, rec.Body)
	}
	s.Drain()
	rec = do(s.Handler(), http.MethodGet, "/readyz", nil, nil)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "shutting down") {
		t.Fatalf("draining: %d %s", rec.Code, rec.Body)
	}
	if rec := do(s.Handler(), http.MethodGet, "/livez", nil, nil); rec.Code != 200 {
		t.Fatalf("livez while draining: %d", rec.Code)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	s, _, reg := newServer(t, &stub{res: ensureuser.Result{Outcome: domain.Confirmed}})
	do(s.Handler(), http.MethodPost, path, map[string]string{"Authorization": "Bearer t"}, nil)
	do(s.Handler(), "BREW", path, nil, nil)
	do(s.Handler(), http.MethodGet, "/random/"+strings.Repeat("x", 10), nil, nil)
	rec := do(s.Handler(), http.MethodGet, "/metrics", nil, nil)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "ensure_user_http_requests_total") {
		t.Fatalf("metrics: %d", rec.Code)
	}
	want := `
# HELP ensure_user_http_requests_total HTTP requests by route pattern, method and status.
# TYPE ensure_user_http_requests_total counter
ensure_user_http_requests_total{method="GET",route="/metrics",status="200"} 1
ensure_user_http_requests_total{method="GET",route="unmatched",status="404"} 1
ensure_user_http_requests_total{method="OTHER",route="/api/v1/auth/ensure-user",status="405"} 1
ensure_user_http_requests_total{method="POST",route="/api/v1/auth/ensure-user",status="200"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ensure_user_http_requests_total"); err != nil {
		t.Fatal(err)
	}
}

// TestRequestLineHasNoCaller: the request line skips the caller lookup (a
// stack walk per request) even when the logger adds callers elsewhere.
func TestRequestLineHasNoCaller(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.DebugLevel)
	s, err := echohttp.New(echohttp.Config{Addr: "127.0.0.1:0", MaxHeaderBytes: 16384}, zap.New(core, zap.AddCaller()),
		&stub{res: ensureuser.Result{Outcome: domain.Confirmed}}, echohttp.Options{ReplyTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	do(s.Handler(), http.MethodPost, path, map[string]string{"Authorization": "Bearer tok"}, nil)
	lines := logs.FilterMessage("request").All()
	if len(lines) != 1 || lines[0].Caller.Defined {
		t.Fatalf("request lines %+v: want one, without a caller", lines)
	}
}

// TestReadHeaderTimeoutIsConfigured: HTTP_READ_HEADER_TIMEOUT (here 1 s)
// is the server's header bound: a client that sends half its headers is cut
// after it, well before the 5 s default.
func TestReadHeaderTimeoutIsConfigured(t *testing.T) {
	t.Parallel()
	s, _, _ := newServer(t, &stub{}, func(c *echohttp.Config, _ *echohttp.Options) { c.ReadHeaderTimeout = time.Second })
	conn, err := net.Dial("tcp", serve(t, s))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(postEnsure)); err != nil { // no blank line: the headers never end
		t.Fatal(err)
	}
	began := time.Now()
	_ = conn.SetReadDeadline(began.Add(echohttp.DefaultReadHeaderTimeout))
	_, err = io.ReadAll(conn)
	took := time.Since(began)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection was still open after %s", took)
	}
	if took < time.Second-100*time.Millisecond {
		t.Fatalf("cut after %s, before the 1 s bound", took)
	}
}
