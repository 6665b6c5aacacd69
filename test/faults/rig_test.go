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
	"maps"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/proc"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/testenv"
)

const (
	endpoint      = testenv.EnsurePath
	requestStream = testenv.RequestStream
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
	scriptEngine                   // a testenv.ScriptedEngine the test drives
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
	idp    *testenv.IdP
	key    *testenv.JWKSKey // idp.Key
	svc    *testenv.Service
	engine *testenv.ScriptedEngine // with scriptEngine
	client *http.Client
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, client: &http.Client{Timeout: 30 * time.Second}}
	r.redis = testenv.StartRedis(t, o.redisOpts...)
	r.redis.SkipIfEmbedded(t, "kills, pauses and restarts a real server")
	r.idp = testenv.NewIdP(t)
	r.key = r.idp.Key
	redisURL := r.redis.URL()
	if o.viaProxy {
		r.proxy = startProxy(t, r.redis.Addr())
		redisURL = "redis://" + r.proxy.Addr() + "/0"
	}
	switch o.engine {
	case simEngine:
		startEngineSim(t, r.redis.URL(), nil)
	case scriptEngine:
		// Straight to Redis, never through the proxy.
		r.engine = testenv.StartScriptedEngine(t, r.redis.Addr())
	}
	r.svc = testenv.StartService(t, r.idp.ServiceEnv(redisURL, o.env))
	r.waitReady(30 * time.Second)
	r.svc.CheckOutput(t)
	return r
}

// token mints a valid token for userID (email userID@example.com).
func (r *rig) token(userID string) string {
	return r.key.UserToken(r.t, userID)
}

// tokens mints n valid tokens for users prefix-0 … prefix-(n-1).
func (r *rig) tokens(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = r.token(prefix + "-" + strconv.Itoa(i))
	}
	return out
}

// post calls the endpoint with a bearer token. It is safe to call from any
// goroutine: it never stops the test, and validates the answer against
// api/openapi.yaml with t.Errorf.
func (r *rig) post(ctx context.Context, client *http.Client, token string) testenv.Answer {
	return testenv.Ensure(ctx, r.t, client, r.svc.URL, token)
}

// ensure calls the endpoint for userID from the test goroutine.
func (r *rig) ensure(userID string) testenv.Answer {
	r.t.Helper()
	a := r.post(context.Background(), r.client, r.token(userID))
	if a.Err != nil {
		r.t.Fatalf("ensure %s: %v", userID, a.Err)
	}
	return a
}

// want fails the test unless a has the given status and body.
func want(t *testing.T, what string, a testenv.Answer, status int, body string) {
	t.Helper()
	if a.Err != nil || a.Status != status || a.Body != body {
		t.Fatalf("%s: got %s, want %d %s", what, a, status, body)
	}
}

// metric reads one series from the service's /metrics (0 when absent).
func (r *rig) metric(series string) float64 {
	r.t.Helper()
	return r.svc.Metric(r.t, series)
}

// waitMetric polls series until cond accepts its value, or fails the test
// after timeout. Metrics have no change event, so polling is the only way.
func (r *rig) waitMetric(series string, timeout time.Duration, cond func(float64) bool) float64 {
	r.t.Helper()
	return waitScrape(r.t, r.svc.URL+"/metrics", series, timeout, cond)
}

func waitScrape(t *testing.T, url, series string, timeout time.Duration, cond func(float64) bool) float64 {
	t.Helper()
	var v float64
	err := poll(timeout, func() bool {
		v = testenv.Scrape(t, url, series)
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
	return proc.WaitFor(context.Background(), timeout, cond, nil)
}

// waitReady waits until /readyz answers 200.
func (r *rig) waitReady(timeout time.Duration) {
	r.t.Helper()
	r.svc.RequireReady(r.t, timeout)
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

// waitLogs waits until the process has printed at least n JSON log lines
// that match accepts, and returns those it has. Request lines are written in
// batches (LOG_FLUSH_INTERVAL), so a client can hold its answer before the
// line is out.
func waitLogs(t *testing.T, p *testenv.Process, n int, match func(map[string]any) bool) []map[string]any {
	t.Helper()
	var out []map[string]any
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.WaitOutput(ctx, func(_ string, logs []map[string]any) bool {
		out = out[:0]
		for _, l := range logs {
			if match(l) {
				out = append(out, l)
			}
		}
		return len(out) >= n
	})
	if err != nil {
		t.Errorf("%d matching log lines, want %d: %v", len(out), n, err)
	}
	return out
}

// startEngineSim runs the engine-sim binary on redisURL with env over fast
// defaults, and waits until it runs.
func startEngineSim(t *testing.T, redisURL string, env map[string]string) *testenv.EngineSim {
	t.Helper()
	e := map[string]string{"ENGINE_READ_BLOCK": "200ms", "ENGINE_CLAIM_IDLE": "2s"}
	maps.Copy(e, env)
	return testenv.StartEngineSim(t, redisURL, e)
}

// await waits until the scripted Engine has read a command for userID and
// returns it.
func (r *rig) await(t *testing.T, userID string) protocol.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := r.engine.Await(ctx, userID)
	if err != nil {
		t.Fatalf("the Engine never read a command for %q", userID)
	}
	return req
}

// collect gathers answers from concurrent requests.
type collect struct {
	mu  sync.Mutex
	all []testenv.Answer
}

func (c *collect) add(a testenv.Answer) {
	c.mu.Lock()
	c.all = append(c.all, a)
	c.mu.Unlock()
}

func (c *collect) answers() []testenv.Answer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]testenv.Answer(nil), c.all...)
}

// countBy counts answers by status (0 for transport errors).
func countBy(as []testenv.Answer) map[int]int {
	m := map[int]int{}
	for _, a := range as {
		m[a.Status]++
	}
	return m
}
