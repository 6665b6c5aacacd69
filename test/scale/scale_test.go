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
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/internal/proc"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// Bodies of the contract, byte for byte.
const (
	bodyConfirmed      = `{"success":true,"message":"User ensured in Engine and DBStorage"}`
	bodyInitiated      = `{"success":true,"message":"User creation initiated"}`
	bodyNoToken        = `{"error":"No token provided."}`
	bodyInvalidPayload = `{"error":"Invalid token payload."}`
)

// tokenFor mints a valid token of key for user as JWKSKey.UserToken does,
// but without a testing.TB, so that goroutines can mint their own: ES256 by
// hand (JOSE header, claims, and the signature as r||s, 32 bytes each).
func tokenFor(key *testenv.JWKSKey, user string) (string, error) {
	claims := testenv.TokenClaims(time.Now(), testenv.Issuer, testenv.Audience)
	claims["sub"], claims["email"] = user, user+"@example.com"
	header, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": key.Kid})
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key.Private.(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + enc.EncodeToString(sig), nil
}

// startService runs one ensure-user instance against redisURL, with a 5 s
// reply timeout unless env says otherwise, and waits until it is ready.
func startService(t *testing.T, p *testenv.IdP, redisURL string, env map[string]string) *testenv.Service {
	t.Helper()
	e := map[string]string{"ENGINE_REPLY_TIMEOUT": "5s"}
	maps.Copy(e, env)
	svc := testenv.StartService(t, p.ServiceEnv(redisURL, e))
	svc.RequireReady(t, 30*time.Second)
	return svc
}

// answer is one HTTP exchange, with the user it was for and the instance
// asked.
type answer struct {
	testenv.Answer
	user string
	svc  int // index of the instance asked
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
	a.Check(t)
	return a
}

// exchange is post without the OpenAPI check, for bursts that check their
// answers afterwards, so as not to compete with the services for the CPU.
func exchange(ctx context.Context, client *http.Client, baseURL, token string) answer {
	req, err := testenv.EnsureRequest(ctx, baseURL, token)
	if err != nil {
		return answer{Answer: testenv.Answer{Err: err}}
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
	return answer{Answer: testenv.Exchange(client, req)}
}

// eventually polls cond every 20 ms until it holds or within has passed: for
// conditions of other processes, which send no event.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := proc.WaitFor(context.Background(), within, cond, nil); err != nil {
		t.Fatalf("%v: %s", err, what)
	}
}

// summary counts answers by status, for logs and failure messages.
func summary(answers []answer) string {
	counts := map[int]int{}
	var errs int
	var worst time.Duration
	for _, a := range answers {
		if a.Err != nil {
			errs++
			continue
		}
		counts[a.Status]++
		worst = max(worst, a.Took)
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
	p        *testenv.IdP
	prefix   string

	mu      sync.Mutex
	answers []answer
	stop    chan struct{}
	done    sync.WaitGroup
}

// startTraffic starts workers goroutines, each sending one call every pause
// at most.
func startTraffic(t *testing.T, p *testenv.IdP, prefix string, workers int, pause time.Duration, services ...*testenv.Service) *traffic {
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
				token, err := tokenFor(p.Key, user)
				a := answer{Answer: testenv.Answer{Err: err}}
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
		if a.Err == nil && a.svc == svc && a.Status == http.StatusOK {
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
		case a.Err != nil:
			t.Errorf("%s: transport error after %s: %v", a.user, a.Took, a.Err)
			continue
		case !slices.Contains([]int{200, 202, 502, 503}, a.Status):
			t.Errorf("%s: %d %s is not an answer a failover may give", a.user, a.Status, a.Body)
		case a.Took > replyTimeout+margin:
			t.Errorf("%s: answered %d after %s, more than the reply timeout %s + %s", a.user, a.Status, a.Took, replyTimeout, margin)
		}
		if a.Status == http.StatusOK {
			confirmed = append(confirmed, a.user)
		}
	}
	return confirmed
}

// checkContract drives the rows of the HTTP contract a healthy stack gives,
// on svc: 200 for a new user and again for the same (existing) user, 401 for
// no token, 400 for an unverified email. name keeps users apart between
// calls.
func checkContract(t *testing.T, p *testenv.IdP, svc *testenv.Service, name string) {
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
		{"new user", p.Key.UserToken(t, user), http.StatusOK, bodyConfirmed},
		{"existing user", p.Key.UserToken(t, user), http.StatusOK, bodyConfirmed},
		{"no token", "", http.StatusUnauthorized, bodyNoToken},
		{"email not verified", p.Key.UserToken(t, user+"-unverified", map[string]any{"email_verified": false}), http.StatusBadRequest, bodyInvalidPayload},
	} {
		a := post(ctx, t, client, svc.URL, row.token)
		if a.Err != nil || a.Status != row.status || a.Body != row.body {
			t.Errorf("%s (%s): got %d %s %v, want %d %s", row.what, name, a.Status, a.Body, a.Err, row.status, row.body)
		}
	}
}
