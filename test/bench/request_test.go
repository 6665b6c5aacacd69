// Package bench holds the whole-request benchmark: one ensure-user request
// through the service's own code, next to the raw ES256 check it cannot do
// without, so that what the service adds on top of the check is measured
// per request in CPU, allocations and bytes.
package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/adapters/jwksauth"
	"github.com/ensure-user/ensure-user/adapters/membus"
	"github.com/ensure-user/ensure-user/adapters/sysclock"
	"github.com/ensure-user/ensure-user/app"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
	"github.com/ensure-user/ensure-user/internal/rawcheck"
	"github.com/ensure-user/ensure-user/internal/zaplog"
	"github.com/ensure-user/ensure-user/test/testenv"
)

const (
	issuer   = "https://idp.bench.example/"
	audience = "ensure-user"
	batch    = 2048 // tokens minted at a time, with the timer stopped
)

// stack is the service as production assembles it, minus the network: the
// Echo handler with its middlewares, the instrumented use case, the JWKS
// verifier (ES256 key from a file) and the in-memory bus, whose Engine
// echoes every command at once through the real wire format.
type stack struct {
	handler http.Handler
	key     *testenv.JWKSKey
	minted  int
}

func newStack(b *testing.B) *stack {
	b.Helper()
	key := testenv.NewJWKSKey(b, "ES256", "bench-1")
	reg := prometheus.NewRegistry()
	log, err := zaplog.NewTo(zaplog.Config{Level: "info", Format: "json", FlushInterval: 100 * time.Millisecond}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	clock := sysclock.New()
	v, stopV, err := jwksauth.New(jwksauth.Config{
		JWKSURL: testenv.NewJWKSFile(b, key).URL, Refresh: 10 * time.Minute, MinRefresh: 30 * time.Second,
		Timeout: 5 * time.Second, Issuer: issuer, Audience: audience, Leeway: 30 * time.Second,
		RequireExp: true, UserIDClaims: []string{"userId", "sub"}, EmailClaim: "email", RequireVerifiedEmail: true,
	}, log, clock, reg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stopV)
	waitReady(b, v.Ready)
	uccfg := ensureuser.Config{ReplyTimeout: 5 * time.Second, MaxWaiting: 20000}
	bus, stopBus, err := membus.NewWithOptions(membus.Config{ReplyTo: "engine:replies"}, log, reg, membus.Options{Handle: echoEngine})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stopBus)
	uc := ensureuser.New(uccfg, v, bus, clock)
	inst, err := app.NewInstrumented(uc, reg, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := echohttp.New(echohttp.Config{Addr: "127.0.0.1:0", MaxHeaderBytes: 16384, ParkAbove: 1000}, log, inst,
		echohttp.Options{ReplyTimeout: uccfg.ReplyTimeout, Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	return &stack{handler: srv.Handler(), key: key}
}

func waitReady(b *testing.B, ready func() error) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ready() != nil {
		if time.Now().After(deadline) {
			b.Fatalf("verifier not ready: %v", ready())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mint returns n tokens, each for a user of its own, so that no request
// hits the verifier's token cache.
func (s *stack) mint(b *testing.B, n int) []string {
	now := time.Now()
	out := make([]string, n)
	for i := range out {
		s.minted++
		claims := testenv.TokenClaims(now, issuer, audience)
		claims["sub"] = fmt.Sprintf("bench-user-%09d", s.minted)
		claims["email"] = fmt.Sprintf("bench-user-%09d@example.com", s.minted)
		out[i] = s.key.MintToken(b, claims)
	}
	return out
}

// BenchmarkRequest is one confirmed ensure-user request through everything
// the service runs for it in process, each with a token never seen before:
// "service" is the whole request, "raw" the raw ES256 check of the same
// kind of token (SHA-256 and crypto/ecdsa.Verify) and nothing else. The
// service's own cost is the difference; it is reported as
// over-raw-ns/op, over-raw-allocs/op and over-raw-B/op on the service line,
// from both runs measured in one loop, alternating, so both see the same
// machine.
//
// The network is not in it (net/http's own reading and writing, the
// kernel, Redis): make loadtest measures those, next to its floor.
func BenchmarkRequest(b *testing.B) {
	s := newStack(b)
	req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, echohttp.RouteEnsureUser, nil)
	w := &discardWriter{h: http.Header{}}
	pub := s.key.Public().(*ecdsa.PublicKey)
	var tokens []string
	next := func(b *testing.B) string {
		if len(tokens) == 0 {
			b.StopTimer()
			tokens = s.mint(b, batch)
			b.StartTimer()
		}
		t := tokens[0]
		tokens = tokens[1:]
		return t
	}
	serve := func(b *testing.B, tok string) {
		req.Header.Set("Authorization", "Bearer "+tok)
		clear(w.h)
		w.status = 0
		s.handler.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d, want 200", w.status)
		}
	}
	raw := func(b *testing.B, tok string) {
		if !rawcheck.Token(pub, tok) {
			b.Fatal("raw check failed")
		}
	}
	for range 64 { // warm the pools and the verifier's header cache
		serve(b, next(b))
	}
	b.Run("service", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			serve(b, next(b))
		}
	})
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			raw(b, next(b))
		}
	})
	b.Run("over-raw", func(b *testing.B) {
		// Both in one loop, alternating: the difference is the service's
		// own work, free of the drift between two separate runs.
		var svc, rw measure
		for b.Loop() {
			svc.run(b, next(b), serve)
			rw.run(b, next(b), raw)
		}
		n := float64(b.N)
		b.ReportMetric(float64(svc.ns-rw.ns)/n, "over-raw-ns/op")
		b.ReportMetric(float64(svc.allocs-rw.allocs)/n, "over-raw-allocs/op")
		b.ReportMetric(float64(svc.bytes-rw.bytes)/n, "over-raw-B/op")
		b.ReportMetric(float64(svc.ns)/float64(rw.ns), "service/raw")
	})
}

// echoEngine is an Engine that costs next to nothing: it confirms every
// command by echoing its request id and user id, taken from the payload
// without decoding it, in a reply built by appending. Its one allocation is
// the reply, which the bus hands on.
func echoEngine(_ context.Context, payload []byte) ([]byte, bool) {
	id, ok1 := member(payload, `"requestId":"`)
	user, ok2 := member(payload, `"userId":"`)
	if !ok1 || !ok2 {
		return nil, false
	}
	r := make([]byte, 0, 96+len(id)+len(user))
	r = append(r, `{"function":"createUser","requestId":"`...)
	r = append(r, id...)
	r = append(r, `","message":"`...)
	r = append(r, user...)
	r = append(r, `","status":"ok"}`...)
	return r, true
}

// member returns the raw content of the string member that starts with key
// (key includes the opening quote); the bench's ids and users need no
// unescaping.
func member(payload []byte, key string) ([]byte, bool) {
	i := bytes.Index(payload, []byte(key))
	if i < 0 {
		return nil, false
	}
	rest := payload[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

// measure sums the time, heap allocations and allocated bytes of the calls
// it runs. The counters are the runtime's own (runtime/metrics), which count
// every goroutine's allocations: the request's, and those made for it by the
// bus and its Engine.
type measure struct {
	ns, allocs, bytes int64
	samples           [2]metrics.Sample
}

func (m *measure) run(b *testing.B, tok string, f func(*testing.B, string)) {
	m.samples[0].Name = "/gc/heap/allocs:objects"
	m.samples[1].Name = "/gc/heap/allocs:bytes"
	metrics.Read(m.samples[:])
	objs, bytes := m.samples[0].Value.Uint64(), m.samples[1].Value.Uint64()
	start := time.Now()
	f(b, tok)
	m.ns += int64(time.Since(start))
	metrics.Read(m.samples[:])
	m.allocs += int64(m.samples[0].Value.Uint64() - objs)
	m.bytes += int64(m.samples[1].Value.Uint64() - bytes)
}
