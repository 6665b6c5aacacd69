// Package scale runs the real binaries the way production scales them out:
// several ensure-user instances on one Redis and one Engine (engine-sim),
// shared or per-instance reply streams, a Redis Cluster and a Sentinel
// group, each failed over under traffic. Every process is the test's own, on
// free loopback ports, and is killed at cleanup; every answer is validated
// against api/openapi.yaml.
package scale

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

const (
	endpoint = "/api/v1/auth/ensure-user"
	issuer   = "https://idp.test/"
	audience = "ensure-user"
)

// Bodies of the contract, byte for byte.
const (
	bodyConfirmed      = `{"success":true,"message":"User ensured in Engine and DBStorage"}`
	bodyInitiated      = `{"success":true,"message":"User creation initiated"}`
	bodyNoToken        = `{"error":"No token provided."}`
	bodyInvalidPayload = `{"error":"Invalid token payload."}`
)

// idp is the identity provider of one test: a signing key published by a
// local JWKS server.
type idp struct {
	key *testenv.JWKSKey
	srv *testenv.JWKSServer
}

func newIDP(t *testing.T) idp {
	t.Helper()
	key := testenv.NewJWKSKey(t, "ES256", "key-1")
	return idp{key: key, srv: testenv.NewJWKSServer(t, key)}
}

// token mints a valid token for user (email user@example.com), with extra
// claims set (or removed, when nil).
func (i idp) token(t *testing.T, user string, extra ...map[string]any) string {
	t.Helper()
	claims := testenv.TokenClaims(time.Now(), issuer, audience)
	claims["sub"], claims["email"] = user, user+"@example.com"
	for _, e := range extra {
		for k, v := range e {
			if v == nil {
				delete(claims, k)
			} else {
				claims[k] = v
			}
		}
	}
	return i.key.MintToken(t, claims)
}

// tokenFor mints a valid token for user as token does, but without a
// testing.TB, so that goroutines can mint their own: ES256 by hand (JOSE
// header, claims, and the signature as r||s, 32 bytes each).
func (i idp) tokenFor(user string) (string, error) {
	claims := testenv.TokenClaims(time.Now(), issuer, audience)
	claims["sub"], claims["email"] = user, user+"@example.com"
	header, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": i.key.Kid})
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, i.key.Private.(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + enc.EncodeToString(sig), nil
}

// startService runs one ensure-user instance against redisURL and waits
// until it is ready.
func startService(t *testing.T, p idp, redisURL string, env map[string]string) *testenv.Service {
	t.Helper()
	e := map[string]string{
		"REDIS_URL":            redisURL,
		"JWKS_URL":             p.srv.URL + "/jwks.json",
		"JWKS_MIN_REFRESH":     "1s",
		"JWT_ISSUER":           issuer,
		"JWT_AUDIENCE":         audience,
		"ENGINE_REPLY_TIMEOUT": "5s",
		"SHUTDOWN_TIMEOUT":     "10s",
	}
	for k, v := range env {
		e[k] = v
	}
	svc := testenv.StartService(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.WaitReady(ctx); err != nil {
		t.Fatalf("%v\n%s", err, svc.Output())
	}
	return svc
}

// startEngine runs engine-sim against redisURL and waits until it runs.
func startEngine(t *testing.T, redisURL string, env map[string]string) *testenv.Process {
	t.Helper()
	e := map[string]string{"REDIS_URL": redisURL, "LOG_LEVEL": "info"}
	for k, v := range env {
		e[k] = v
	}
	p := testenv.Start(t, testenv.BuildBinary(t, "./cmd/engine-sim"), e)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := p.WaitLog(ctx, "engine running"); err != nil {
		t.Fatalf("engine-sim did not start: %v\n%s", err, p.Output())
	}
	return p
}

// answer is one HTTP exchange.
type answer struct {
	user   string
	svc    int // index of the instance asked
	status int
	body   string
	took   time.Duration
	err    error // transport error

	req    *http.Request // for the OpenAPI check
	header http.Header
}

// newHTTPClient is a client that keeps up to n connections per instance.
func newHTTPClient(n int) *http.Client {
	return &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 3 * n, MaxIdleConnsPerHost: n},
	}
}

// post sends one ensure-user call with token ("" for none) and validates the
// answer against the OpenAPI document. It is safe to call from any goroutine.
func post(ctx context.Context, t *testing.T, client *http.Client, baseURL, token string) answer {
	a := exchange(ctx, client, baseURL, token)
	validate(t, a)
	return a
}

// exchange is post without the OpenAPI check, for bursts that check their
// answers afterwards, so as not to compete with the services for the CPU.
func exchange(ctx context.Context, client *http.Client, baseURL, token string) answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+endpoint, nil)
	if err != nil {
		return answer{err: err}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// With this header net/http retries, on a new connection, a request the
	// server closed its connection on before answering (transport.go,
	// shouldRetryRequest). That happens when a starved client (thousands of
	// goroutines under the race detector, beside other packages' tests)
	// writes its request more than ReadHeaderTimeout (5 s) after its
	// connection was accepted: the server then drops the connection without
	// reading anything, so nothing was processed. The service ignores the
	// header; a request it did process is never retried this way (the
	// answers' counts below would show it).
	req.Header.Set("Idempotency-Key", "none")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err, took: time.Since(start)}
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return answer{err: err, took: took}
	}
	return answer{status: resp.StatusCode, body: string(body), took: took, req: req, header: resp.Header}
}

// validate checks an answer against api/openapi.yaml.
func validate(t *testing.T, a answer) {
	t.Helper()
	if a.err == nil {
		testenv.CheckOpenAPI(t, a.req, a.status, a.header, []byte(a.body))
	}
}

// metric reads one series from an instance's /metrics, written as it appears
// there (labels sorted by name); 0 when absent.
func metric(t *testing.T, svc *testenv.Service, series string) float64 {
	t.Helper()
	resp, err := http.Get(svc.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return testenv.ScrapeValue(t, resp.Body, series)
}

// eventually polls cond every 20 ms until it holds or within has passed: for
// conditions of other processes, which send no event.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		<-tick.C
	}
}

// summary counts answers by status, for logs and failure messages.
func summary(answers []answer) string {
	counts := map[int]int{}
	var errs int
	var worst time.Duration
	for _, a := range answers {
		if a.err != nil {
			errs++
			continue
		}
		counts[a.status]++
		worst = max(worst, a.took)
	}
	keys := make([]int, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%d×%d ", counts[k], k)
	}
	if errs > 0 {
		fmt.Fprintf(&b, "%d transport errors ", errs)
	}
	fmt.Fprintf(&b, "(slowest %s)", worst.Round(time.Millisecond))
	return b.String()
}

// traffic sends ensure-user calls for new users from a few goroutines,
// round-robin over services, each call after the previous one's answer and a
// pause, until finish; it keeps every answer. Users are named
// prefix-<worker>-<n>.
type traffic struct {
	t        *testing.T
	client   *http.Client
	services []*testenv.Service
	p        idp
	prefix   string

	mu      sync.Mutex
	answers []answer
	stop    chan struct{}
	done    sync.WaitGroup
}

// startTraffic starts workers goroutines, each sending one call every pause
// at most.
func startTraffic(t *testing.T, p idp, prefix string, workers int, pause time.Duration, services ...*testenv.Service) *traffic {
	t.Helper()
	tr := &traffic{t: t, client: newHTTPClient(workers), services: services, p: p, prefix: prefix, stop: make(chan struct{})}
	for w := range workers {
		tr.done.Go(func() {
			tick := time.NewTicker(pause)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-tr.stop:
					return
				case <-tick.C:
				}
				i := (w + n) % len(services)
				user := fmt.Sprintf("%s-%d-%d", prefix, w, n)
				token, err := p.tokenFor(user)
				a := answer{err: err}
				if err == nil {
					a = post(context.Background(), t, tr.client, services[i].URL, token)
				}
				a.user, a.svc = user, i
				tr.mu.Lock()
				tr.answers = append(tr.answers, a)
				tr.mu.Unlock()
			}
		})
	}
	return tr
}

// snapshot returns the answers so far.
func (tr *traffic) snapshot() []answer {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.answers)
}

// finish stops the workers, waits for the calls in flight, and returns every
// answer.
func (tr *traffic) finish() []answer {
	close(tr.stop)
	tr.done.Wait()
	return tr.snapshot()
}

// confirmedSince counts the 200 answers of service svc among answers[from:].
func confirmedSince(answers []answer, from, svc int) int {
	n := 0
	for _, a := range answers[min(from, len(answers)):] {
		if a.err == nil && a.svc == svc && a.status == http.StatusOK {
			n++
		}
	}
	return n
}

// checkFailoverAnswers asserts what a failover may do to requests: only the
// documented answers (200, 202, 502, 503), none slower than the reply
// timeout plus margin, no transport error; and it returns the users answered
// 200, whose creation the Engine confirmed.
func checkFailoverAnswers(t *testing.T, answers []answer, replyTimeout, margin time.Duration) []string {
	t.Helper()
	var confirmed []string
	for _, a := range answers {
		switch {
		case a.err != nil:
			t.Errorf("%s: transport error after %s: %v", a.user, a.took, a.err)
			continue
		case !slices.Contains([]int{200, 202, 502, 503}, a.status):
			t.Errorf("%s: %d %s is not an answer a failover may give", a.user, a.status, a.body)
		case a.took > replyTimeout+margin:
			t.Errorf("%s: answered %d after %s, more than the reply timeout %s + %s", a.user, a.status, a.took, replyTimeout, margin)
		}
		if a.status == http.StatusOK {
			confirmed = append(confirmed, a.user)
		}
	}
	return confirmed
}

// checkContract drives the rows of the HTTP contract a healthy stack gives,
// on svc: 200 for a new user and again for the same (existing) user, 401 for
// no token, 400 for an unverified email. name keeps users apart between
// calls.
func checkContract(t *testing.T, p idp, svc *testenv.Service, name string) {
	t.Helper()
	client := newHTTPClient(1)
	ctx := context.Background()
	user := "contract-" + name
	for _, row := range []struct {
		what   string
		token  string
		status int
		body   string
	}{
		{"new user", p.token(t, user), http.StatusOK, bodyConfirmed},
		{"existing user", p.token(t, user), http.StatusOK, bodyConfirmed},
		{"no token", "", http.StatusUnauthorized, bodyNoToken},
		{"email not verified", p.token(t, user+"-unverified", map[string]any{"email_verified": false}), http.StatusBadRequest, bodyInvalidPayload},
	} {
		a := post(ctx, t, client, svc.URL, row.token)
		if a.err != nil || a.status != row.status || a.body != row.body {
			t.Errorf("%s (%s): got %d %s %v, want %d %s", row.what, name, a.status, a.body, a.err, row.status, row.body)
		}
	}
}
