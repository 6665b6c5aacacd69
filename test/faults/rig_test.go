// Package faults proves the service's behaviour under faults at the level of
// the real binaries: the ensure-user binary over real HTTP, redis-server
// processes the tests start, kill and restart on free loopback ports, the
// engine-sim binary (or an Engine the test scripts), a JWKS server the test
// breaks, a TCP proxy that blackholes Redis, and clients that misbehave.
// Adapter-level fault tests live next to the adapters; these show that the
// assembled process keeps its promises (docs/reliability.md).
//
// Time bounds asserted here are sanity bounds on fault paths ("no request
// waits past its reply timeout plus a margin"), never performance targets.
package faults

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/testenv"
)

const (
	endpoint      = "/api/v1/auth/ensure-user"
	issuer        = "https://idp.test/"
	audience      = "ensure-user"
	requestStream = "engine:requests"
	replyStream   = "engine:replies"
)

// Bodies of the contract, byte for byte.
const (
	bodyConfirmed    = `{"success":true,"message":"User ensured in Engine and DBStorage"}`
	bodyInitiated    = `{"success":true,"message":"User creation initiated"}`
	bodyInvalidToken = `{"error":"Invalid or expired token."}`
	bodyEngineFailed = `{"error":"Failed to ensure user, but request was sent to Engine"}`
	bodyNotSent      = `{"error":"Engine unavailable: user creation request was not sent."}`
	bodyBusy         = `{"error":"Service busy: user creation request was not sent."}`
)

// Metric series the tests read, as they appear in the exposition.
const (
	mSent          = "ensure_user_engine_commands_sent_total"
	mSendUnknown   = `ensure_user_engine_send_errors_total{kind="unknown"}`
	mDelivered     = `ensure_user_engine_replies_total{result="delivered"}`
	mLate          = `ensure_user_engine_replies_total{result="late"}`
	mUnknown       = `ensure_user_engine_replies_total{result="unknown"}`
	mMalformed     = `ensure_user_engine_replies_total{result="malformed"}`
	mReaderUp      = "ensure_user_engine_reader_connected"
	mClientGone    = `ensure_user_outcomes_total{outcome="client_gone"}`
	mBusy          = `ensure_user_outcomes_total{outcome="busy"}`
	mRefreshOK     = `ensure_user_jwks_refresh_total{result="ok"}`
	mRefreshFailed = `ensure_user_jwks_refresh_total{result="failed"}`
	mJWKSKeys      = "ensure_user_jwks_keys"
)

// engineKind says which Engine a rig runs.
type engineKind int

const (
	noEngine     engineKind = iota // nobody reads the request stream
	simEngine                      // the engine-sim binary
	scriptEngine                   // a scriptedEngine the test drives
)

// rigOptions configure newRig.
type rigOptions struct {
	env       map[string]string // service variables, over the defaults
	engine    engineKind
	viaProxy  bool // the service reaches Redis through a proxy
	redisOpts []testenv.RedisOption
}

// rig is one service with its own Redis, identity provider and Engine.
type rig struct {
	t      *testing.T
	redis  *testenv.Redis
	proxy  *proxy // nil unless viaProxy
	idp    *testenv.JWKSServer
	key    *testenv.JWKSKey
	svc    *testenv.Service
	engine *scriptedEngine // with scriptEngine
	client *http.Client
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, client: &http.Client{Timeout: 30 * time.Second}}
	r.redis = testenv.StartRedis(t, o.redisOpts...)
	r.redis.SkipIfEmbedded(t, "kills, pauses and restarts a real server")
	r.key = testenv.NewJWKSKey(t, "ES256", "key-1")
	r.idp = testenv.NewJWKSServer(t, r.key)
	redisURL := r.redis.URL()
	if o.viaProxy {
		r.proxy = startProxy(t, r.redis.Addr())
		redisURL = "redis://" + r.proxy.Addr() + "/0"
	}
	switch o.engine {
	case simEngine:
		startEngineSim(t, r.redis.URL(), nil)
	case scriptEngine:
		r.engine = startScriptedEngine(t, r.redis.Addr())
	}
	env := map[string]string{
		"REDIS_URL":            redisURL,
		"JWKS_URL":             r.idp.URL,
		"JWKS_MIN_REFRESH":     "1s",
		"JWT_ISSUER":           issuer,
		"JWT_AUDIENCE":         audience,
		"ENGINE_REPLY_TIMEOUT": "2s",
		"SHUTDOWN_TIMEOUT":     "10s",
	}
	for k, v := range o.env {
		env[k] = v
	}
	r.svc = testenv.StartService(t, env)
	r.waitReady(30 * time.Second)
	t.Cleanup(func() {
		if out := r.svc.Output(); strings.Contains(out, "eyJ") {
			t.Errorf("service output contains something that looks like a JWT")
		}
	})
	return r
}

// token mints a valid token for userID (email userID@example.com).
func (r *rig) token(userID string) string {
	return mint(r.t, r.key, userID, nil)
}

// mint returns a token signed by key for userID, with extra claims (nil
// values delete a claim).
func mint(t *testing.T, key *testenv.JWKSKey, userID string, extra map[string]any) string {
	t.Helper()
	c := testenv.TokenClaims(time.Now(), issuer, audience)
	c["sub"], c["email"] = userID, userID+"@example.com"
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return key.MintToken(t, c)
}

// tokens mints n valid tokens for users prefix-0 … prefix-(n-1).
func (r *rig) tokens(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = r.token(prefix + "-" + strconv.Itoa(i))
	}
	return out
}

// answer is one HTTP exchange as a test sees it.
type answer struct {
	status int
	header http.Header
	body   string
	start  time.Time
	took   time.Duration
	err    error // transport error; status is 0
}

func (a answer) String() string {
	if a.err != nil {
		return fmt.Sprintf("error after %s: %v", a.took.Round(time.Millisecond), a.err)
	}
	return fmt.Sprintf("%d %s after %s", a.status, a.body, a.took.Round(time.Millisecond))
}

// post calls the endpoint with a bearer token. It is safe to call from any
// goroutine: it never stops the test, and validates the answer against
// api/openapi.yaml with t.Errorf.
func (r *rig) post(ctx context.Context, client *http.Client, token string) answer {
	return post(ctx, r.t, client, r.svc.URL, token)
}

func post(ctx context.Context, t *testing.T, client *http.Client, base, token string) answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+endpoint, nil)
	if err != nil {
		return answer{err: err}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	a := answer{start: time.Now()}
	resp, err := client.Do(req)
	if err != nil {
		a.took, a.err = time.Since(a.start), err
		return a
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	a.took = time.Since(a.start)
	if err != nil {
		a.err = err
		return a
	}
	a.status, a.header, a.body = resp.StatusCode, resp.Header, string(b)
	testenv.CheckOpenAPI(t, req, resp.StatusCode, resp.Header, b)
	return a
}

// ensure calls the endpoint for userID from the test goroutine.
func (r *rig) ensure(userID string) answer {
	r.t.Helper()
	a := r.post(context.Background(), r.client, r.token(userID))
	if a.err != nil {
		r.t.Fatalf("ensure %s: %v", userID, a.err)
	}
	return a
}

// want fails the test unless a has the given status and body.
func want(t *testing.T, what string, a answer, status int, body string) {
	t.Helper()
	if a.err != nil || a.status != status || a.body != body {
		t.Fatalf("%s: got %s, want %d %s", what, a, status, body)
	}
}

// metric reads one series from the service's /metrics (0 when absent).
func (r *rig) metric(series string) float64 {
	r.t.Helper()
	return scrape(r.t, r.client, r.svc.URL+"/metrics", series)
}

func scrape(t *testing.T, client *http.Client, url, series string) float64 {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	return testenv.ScrapeValue(t, resp.Body, series)
}

// waitMetric polls series until cond accepts its value, or fails the test
// after timeout. Metrics have no change event, so polling is the only way.
func (r *rig) waitMetric(series string, timeout time.Duration, cond func(float64) bool) float64 {
	r.t.Helper()
	return waitScrape(r.t, r.client, r.svc.URL+"/metrics", series, timeout, cond)
}

func waitScrape(t *testing.T, client *http.Client, url, series string, timeout time.Duration, cond func(float64) bool) float64 {
	t.Helper()
	var v float64
	err := poll(timeout, func() bool {
		v = scrape(t, client, url, series)
		return cond(v)
	})
	if err != nil {
		t.Fatalf("%s stayed at %v: %v", series, v, err)
	}
	return v
}

// poll calls cond every 20 ms until it reports true, or returns an error
// after timeout. For conditions outside the test process, which send no
// events.
func poll(timeout time.Duration, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return fmt.Errorf("not within %s", timeout)
		case <-tick.C:
		}
	}
	return nil
}

// waitReady waits until /readyz answers 200.
func (r *rig) waitReady(timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := r.svc.WaitReady(ctx); err != nil {
		r.t.Fatalf("the service is not ready: %v", err)
	}
}

// waitNotReady waits until /readyz answers 503.
func (r *rig) waitNotReady(timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := testenv.WaitHTTP(ctx, r.svc.URL+"/readyz", http.StatusServiceUnavailable); err != nil {
		r.t.Fatal(err)
	}
}

// assertAlive fails the test if the service process has exited.
func (r *rig) assertAlive() {
	r.t.Helper()
	select {
	case <-r.svc.Done():
		r.t.Fatalf("the service exited:\n%s", r.svc.Output())
	default:
	}
}

// xlen is the length of stream key.
func (r *rig) xlen(key string) int64 {
	r.t.Helper()
	n, err := r.redis.MustDo(context.Background(), "XLEN", key).AsInt64()
	if err != nil {
		r.t.Fatal(err)
	}
	return n
}

// streamRequests returns the requests in the request stream, in order.
func (r *rig) streamRequests() []protocol.Request {
	r.t.Helper()
	entries, err := r.redis.MustDo(context.Background(), "XRANGE", requestStream, "-", "+").AsXRange()
	if err != nil {
		r.t.Fatal(err)
	}
	out := make([]protocol.Request, 0, len(entries))
	for _, e := range entries {
		req, err := protocol.DecodeRequest([]byte(e.FieldValues[protocol.Field]))
		if err != nil {
			r.t.Fatalf("entry %s of %s: %v", e.ID, requestStream, err)
		}
		out = append(out, req)
	}
	return out
}

// assertDistinctRequestIDs fails when a request id appears twice in reqs:
// the service never sends one command twice.
func assertDistinctRequestIDs(t *testing.T, reqs []protocol.Request) map[string]protocol.Request {
	t.Helper()
	byID := make(map[string]protocol.Request, len(reqs))
	for _, q := range reqs {
		if _, dup := byID[q.RequestID]; dup {
			t.Errorf("request id %s is in the stream twice", q.RequestID)
		}
		byID[q.RequestID] = q
	}
	return byID
}

// groupState is one consumer group of XINFO GROUPS.
type groupState struct {
	pending       int64
	lastDelivered string
	entriesRead   int64 // -1 when Redis does not know
}

// group returns the state of consumer group name on stream key.
func (r *rig) group(key, name string) (groupState, bool) {
	r.t.Helper()
	groups, err := r.redis.MustDo(context.Background(), "XINFO", "GROUPS", key).ToArray()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, g := range groups {
		m, err := g.AsMap()
		if err != nil {
			r.t.Fatal(err)
		}
		field := func(k string) *rueidis.RedisMessage { v := m[k]; return &v }
		if n, _ := field("name").ToString(); n != name {
			continue
		}
		gs := groupState{entriesRead: -1}
		gs.pending, _ = field("pending").AsInt64()
		gs.lastDelivered, _ = field("last-delivered-id").ToString()
		if v, err := field("entries-read").AsInt64(); err == nil {
			gs.entriesRead = v
		}
		return gs, true
	}
	return groupState{}, false
}

// lastStreamID is the last id generated on stream key.
func (r *rig) lastStreamID(key string) string {
	r.t.Helper()
	info, err := r.redis.MustDo(context.Background(), "XINFO", "STREAM", key).AsMap()
	if err != nil {
		r.t.Fatal(err)
	}
	v := info["last-generated-id"]
	id, _ := v.ToString()
	return id
}

// waitEngineCaughtUp waits until the engine-sim consumer group has read every
// entry of the request stream and acked it: nothing left for the Engine.
func (r *rig) waitEngineCaughtUp(timeout time.Duration) groupState {
	r.t.Helper()
	var gs groupState
	err := poll(timeout, func() bool {
		var ok bool
		gs, ok = r.group(requestStream, "engine")
		return ok && gs.pending == 0 && gs.lastDelivered == r.lastStreamID(requestStream)
	})
	if err != nil {
		r.t.Fatalf("the Engine did not catch up (%+v, stream at %s): %v", gs, r.lastStreamID(requestStream), err)
	}
	return gs
}

// logsWith returns the service's JSON log lines with msg.
func logsWith(p *testenv.Process, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range p.Logs() {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// engineSim is a running engine-sim binary.
type engineSim struct {
	*testenv.Process
	metricsURL string
}

// startEngineSim runs the engine-sim binary on redisURL with env over fast
// defaults, and waits until its metrics listen.
func startEngineSim(t *testing.T, redisURL string, env map[string]string) *engineSim {
	t.Helper()
	e := map[string]string{
		"REDIS_URL":         redisURL,
		"METRICS_ADDR":      "127.0.0.1:0",
		"ENGINE_READ_BLOCK": "200ms",
		"ENGINE_CLAIM_IDLE": "2s",
	}
	for k, v := range env {
		e[k] = v
	}
	p := testenv.Start(t, testenv.BuildBinary(t, "./cmd/engine-sim"), e)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := p.WaitLog(ctx, "metrics listening")
	if err != nil {
		t.Fatalf("engine-sim did not start: %v\n%s", err, p.Output())
	}
	addr, _ := l["addr"].(string)
	return &engineSim{Process: p, metricsURL: "http://" + addr + "/metrics"}
}

// newRedisClient returns a client of the test's own for addr that connects
// lazily and again after every loss, closed at cleanup. Unlike
// testenv.Redis.Client it survives Kill and Restart, for goroutines.
func newRedisClient(t *testing.T, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{addr},
		DisableCache:      true,
		ForceSingleClient: true,
		DisableRetry:      true,
		AlwaysPipelining:  true,
		Dialer:            netDialer(),
	})
	if c == nil {
		t.Fatalf("redis client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// collect gathers answers from concurrent requests.
type collect struct {
	mu  sync.Mutex
	all []answer
}

func (c *collect) add(a answer) {
	c.mu.Lock()
	c.all = append(c.all, a)
	c.mu.Unlock()
}

func (c *collect) answers() []answer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]answer(nil), c.all...)
}

// countBy counts answers by status (0 for transport errors).
func countBy(as []answer) map[int]int {
	m := map[int]int{}
	for _, a := range as {
		m[a.status]++
	}
	return m
}
