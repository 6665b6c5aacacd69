package echohttp_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
)

// gated is a use case that answers what the test says once the test opens
// its gate (a nil gate is open).
type gated struct {
	res     ensureuser.Result
	err     error
	started chan struct{} // receives when a request reached the use case (nil: not told)
	gate    chan struct{}
}

func (g *gated) Start(context.Context, ensureuser.Input) (ensureuser.Pending, error) {
	return ensureuser.Pending{}, nil
}

// Wait is where a gated request stops: in place or parked, so started
// tells the test that the request's parking is settled.
func (g *gated) Wait(ctx context.Context, _ *ensureuser.Pending) (ensureuser.Result, error) {
	if g.started != nil {
		g.started <- struct{}{}
	}
	if g.gate != nil {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return ensureuser.Result{}, ctx.Err()
		}
	}
	return g.res, g.err
}

// serve runs s on a loopback listener until the test ends and returns its
// address.
func serve(t *testing.T, s *echohttp.Server) string {
	addr, _ := serveStop(t, s)
	return addr
}

// serveStop is serve that also returns a stop function: it shuts s down
// (waiting for the parked requests) and reports what Serve returned. The
// test's cleanup calls it too; it runs once.
func serveStop(t *testing.T, s *echohttp.Server) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln, nil) }()
	stop = sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

func parkAbove(n int) func(*echohttp.Config, *echohttp.Options) {
	return func(c *echohttp.Config, _ *echohttp.Options) { c.ParkAbove = n }
}

const postEnsure = "POST " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"

// roundTrip writes raw requests on conn and reads as many answers.
func roundTrip(t *testing.T, conn net.Conn, br *bufio.Reader, raw string, answers int) []*http.Response {
	t.Helper()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	var out []*http.Response
	for range answers {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read answer %d: %v", len(out)+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		out = append(out, resp)
	}
	return out
}

func bodyOf(r *http.Response) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

// TestParkedAnswersAreTheSame: for every answer of the contract, a parked
// request gets the status, body and headers the server writes in place
// (Date and the request id aside), CORS included.
func TestParkedAnswersAreTheSame(t *testing.T) {
	t.Parallel()
	ok := ensureuser.Result{Outcome: domain.Confirmed, UserID: "u1", RequestID: "r1", Sent: true}
	cases := []struct {
		name string
		res  ensureuser.Result
		err  error
	}{
		{"confirmed", ok, nil},
		{"initiated", ensureuser.Result{Outcome: domain.Initiated, Sent: true}, nil},
		{"no token", ensureuser.Result{}, domain.ErrNoToken},
		{"invalid token", ensureuser.Result{}, domain.ErrInvalidToken},
		{"invalid payload", ensureuser.Result{}, domain.ErrInvalidPayload},
		{"verifier unavailable", ensureuser.Result{}, domain.ErrVerifierUnavailable},
		{"busy", ensureuser.Result{}, domain.ErrBusy},
		{"not sent", ensureuser.Result{}, domain.ErrBusUnavailable},
		{"engine failed", ensureuser.Result{Sent: true}, domain.ErrEngineFailed},
		{"internal", ensureuser.Result{}, errors.New("boom")},
	}
	cors := func(c *echohttp.Config, _ *echohttp.Options) { c.CORSOrigins = []string{"https://app.example"} }
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got [2]*http.Response
			for i, park := range []int{-1, 0} {
				s, _, reg := newServer(t, &gated{res: tc.res, err: tc.err}, parkAbove(park), cors)
				addr := serve(t, s)
				req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, nil)
				req.Header.Set("Authorization", "Bearer t")
				req.Header.Set("Origin", "https://app.example")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				resp.Body = io.NopCloser(strings.NewReader(string(body)))
				got[i] = resp
				if n := testutil.ToFloat64(counter(t, reg, "ensure_user_http_parked_total")); n != float64(i) {
					t.Errorf("park=%d: ensure_user_http_parked_total = %v, want %d", park, n, i)
				}
			}
			inPlace, parked := got[0], got[1]
			if inPlace.StatusCode != parked.StatusCode {
				t.Errorf("status: in place %d, parked %d", inPlace.StatusCode, parked.StatusCode)
			}
			if a, b := bodyOf(inPlace), bodyOf(parked); a != b {
				t.Errorf("body: in place %s, parked %s", a, b)
			}
			for _, h := range []http.Header{inPlace.Header, parked.Header} {
				if h.Get("Date") == "" || h.Get("X-Request-Id") == "" {
					t.Errorf("Date or X-Request-Id missing: %v", h)
				}
				h.Del("Date")
				h.Del("X-Request-Id")
			}
			if a, b := canon(inPlace.Header), canon(parked.Header); a != b {
				t.Errorf("headers differ:\nin place %s\nparked   %s", a, b)
			}
			if inPlace.ContentLength != parked.ContentLength || parked.ContentLength <= 0 {
				t.Errorf("Content-Length: in place %d, parked %d", inPlace.ContentLength, parked.ContentLength)
			}
		})
	}
}

func canon(h http.Header) string {
	var b strings.Builder
	_ = h.Write(&b)
	return b.String()
}

// counter finds a metric of reg by name, for testutil.
func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "", nil, nil), prometheus.UntypedValue, m.GetCounter().GetValue()+m.GetGauge().GetValue())
				}
			}
		}
	})
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// TestParkedConnectionStaysUsable: after a parked answer the keep-alive
// connection goes back to the server: the next request on it, pipelined
// requests, and another route all work, in order.
func TestParkedConnectionStaysUsable(t *testing.T) {
	t.Parallel()
	uc := &gated{res: ensureuser.Result{Outcome: domain.Confirmed, UserID: "u1", RequestID: "r1"}}
	s, logs, reg := newServer(t, uc, parkAbove(0))
	addr, stop := serveStop(t, s)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)

	for _, r := range roundTrip(t, conn, br, postEnsure+"\r\n", 1) {
		if r.StatusCode != 200 || r.Close {
			t.Fatalf("first answer: %d, close=%v", r.StatusCode, r.Close)
		}
	}
	// Three requests at once: two parked POSTs around a GET the server
	// answers itself.
	raw := postEnsure + "X-Request-ID: a\r\n\r\n" + "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n" + postEnsure + "X-Request-ID: c\r\n\r\n"
	rs := roundTrip(t, conn, br, raw, 3)
	if rs[0].StatusCode != 200 || rs[0].Header.Get("X-Request-Id") != "a" {
		t.Errorf("pipelined 1: %d %v", rs[0].StatusCode, rs[0].Header)
	}
	if rs[1].StatusCode != 200 || bodyOf(rs[1]) != `{"status":"ok"}` {
		t.Errorf("pipelined 2 (livez): %d", rs[1].StatusCode)
	}
	if rs[2].StatusCode != 200 || rs[2].Header.Get("X-Request-Id") != "c" {
		t.Errorf("pipelined 3: %d %v", rs[2].StatusCode, rs[2].Header)
	}
	if n := testutil.ToFloat64(counter(t, reg, "ensure_user_http_parked_total")); n != 3 {
		t.Errorf("parked %v requests, want 3", n)
	}
	// A parked request is logged and counted after its answer is written (a
	// failed write is logged as client_gone), so the client can read the
	// answer first: stop the server, which waits for the parked requests.
	_ = conn.Close()
	stop()
	// Each parked request has its log line, with what the use case found.
	lines := logs.FilterMessage("request").FilterField(zap.String("outcome", "confirmed")).All()
	if len(lines) != 3 {
		t.Fatalf("%d confirmed log lines, want 3", len(lines))
	}
	f := lines[1].ContextMap()
	if f["request_id"] != "a" || f["user_id"] != "u1" || f["engine_request_id"] != "r1" || f["status"] != int64(200) {
		t.Errorf("log line: %v", f)
	}
	want := `
# HELP ensure_user_http_requests_total HTTP requests by route pattern, method and status.
# TYPE ensure_user_http_requests_total counter
ensure_user_http_requests_total{method="GET",route="/livez",status="200"} 1
ensure_user_http_requests_total{method="POST",route="/api/v1/auth/ensure-user",status="200"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ensure_user_http_requests_total"); err != nil {
		t.Error(err)
	}
}

// TestParkedConnectionClose: a client that asks to close (or speaks
// HTTP/1.0) gets its answer, told Connection: close, and then EOF.
func TestParkedConnectionClose(t *testing.T) {
	t.Parallel()
	uc := &gated{res: ensureuser.Result{Outcome: domain.Initiated}}
	s, _, _ := newServer(t, uc, parkAbove(0))
	addr := serve(t, s)
	for _, raw := range []string{
		postEnsure + "Connection: close\r\n\r\n",
		"POST " + path + " HTTP/1.0\r\nAuthorization: Bearer t\r\n\r\n",
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		r := roundTrip(t, conn, br, raw, 1)[0]
		if r.StatusCode != 202 || !r.Close {
			t.Errorf("%q: %d, close=%v", raw, r.StatusCode, r.Close)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%q: after the answer: %v, want EOF", raw, err)
		}
		_ = conn.Close()
	}
}

// TestShutdownWaitsForParked: Shutdown answers a parked request before it
// returns (telling the client to close), and closes an idle parked
// connection.
func TestShutdownWaitsForParked(t *testing.T) {
	t.Parallel()
	uc := &gated{res: ensureuser.Result{Outcome: domain.Confirmed}, started: make(chan struct{}, 2), gate: make(chan struct{})}
	s, _, _ := newServer(t, uc, parkAbove(0))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln, nil) }()

	// An idle parked connection: answered once, now waiting for more.
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	go func() { <-uc.started; uc.gate <- struct{}{} }()
	roundTrip(t, idle, idleR, postEnsure+"\r\n", 1)

	// A parked request waiting for its answer.
	busy, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := io.WriteString(busy, postEnsure+"\r\n"); err != nil {
		t.Fatal(err)
	}
	<-uc.started

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if _, err := idleR.ReadByte(); err != io.EOF {
		t.Errorf("idle parked connection: %v, want EOF at shutdown", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) before the parked request was answered", err)
	default:
	}
	close(uc.gate)
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("parked answer during shutdown: %d, close=%v", resp.StatusCode, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// TestParkAbove: with HTTP_PARK_ABOVE=1, the first request in flight is
// handled in place, the second one parks.
func TestParkAbove(t *testing.T) {
	t.Parallel()
	uc := &gated{res: ensureuser.Result{Outcome: domain.Confirmed}, started: make(chan struct{}, 2), gate: make(chan struct{})}
	s, _, reg := newServer(t, uc, parkAbove(1))
	addr := serve(t, s)
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, postEnsure+"\r\n"); err != nil {
			t.Fatal(err)
		}
		<-uc.started
		conns = append(conns, c)
	}
	if n := testutil.ToFloat64(counter(t, reg, "ensure_user_http_parked_total")); n != 1 {
		t.Errorf("parked %v requests, want 1", n)
	}
	if n := testutil.ToFloat64(counter(t, reg, "ensure_user_http_parked_connections")); n != 1 {
		t.Errorf("ensure_user_http_parked_connections = %v, want 1", n)
	}
	close(uc.gate)
	for _, c := range conns {
		if r, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || r.StatusCode != 200 {
			t.Errorf("answer: %v %v", r, err)
		}
	}
}

// TestIdleConnectionsAreEvicted: beyond HTTP_PARK_ABOVE connections in the
// HTTP server, a keep-alive connection that goes idle leaves it and waits
// parked; its next request, pipelined requests included, is served as
// usual, in order.
func TestIdleConnectionsAreEvicted(t *testing.T) {
	t.Parallel()
	s, _, reg := newServer(t, &gated{res: ensureuser.Result{Outcome: domain.Confirmed}}, parkAbove(0))
	addr := serve(t, s)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	const livez = "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"

	metric := func(name string) float64 { return testutil.ToFloat64(counter(t, reg, name)) }
	// awaitParked waits until n connections are parked: the eviction runs
	// after the answer is written.
	awaitParked := func(n float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for metric("ensure_user_http_parked_connections") != n {
			if time.Now().After(deadline) {
				t.Fatalf("parked connections = %v, want %v", metric("ensure_user_http_parked_connections"), n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	if r := roundTrip(t, conn, br, livez, 1)[0]; r.StatusCode != 200 || bodyOf(r) != `{"status":"ok"}` {
		t.Fatalf("first answer: %d", r.StatusCode)
	}
	awaitParked(1)
	if n := metric("ensure_user_http_evicted_total"); n != 1 {
		t.Fatalf("evicted %v connections, want 1", n)
	}
	// Two requests in one write: the second is served from the server's
	// buffer before the connection can be evicted again.
	rs := roundTrip(t, conn, br, livez+"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 2)
	if rs[0].StatusCode != 200 || rs[1].StatusCode != 404 {
		t.Fatalf("pipelined: %d, %d", rs[0].StatusCode, rs[1].StatusCode)
	}
	awaitParked(1)
	if n := metric("ensure_user_http_evicted_total"); n != 2 {
		t.Fatalf("evicted %v times, want 2", n)
	}
	if r := roundTrip(t, conn, br, postEnsure+"\r\n", 1)[0]; r.StatusCode != 200 {
		t.Fatalf("ensure-user after all that: %d", r.StatusCode)
	}
}
