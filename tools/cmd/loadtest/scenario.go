package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ensure-user/ensure-user/internal/proc"
)

// Streams the service and engine-sim use by default.
const (
	requestStream = "engine:requests"
	replyStream   = "engine:replies"
	perInstance   = "engine:replies:{instance}"
)

// scenario is one kind of run.
type scenario struct {
	Name        string
	Description string
	Kind        string // "closed", "open" or "burst"
	Concurrency int    // closed: workers
	Rate        float64
	Requests    int // burst: requests sent at once
	Instances   int
	ReplyStream string        // ENGINE_REPLY_STREAM; "" for the default
	EngineDelay time.Duration // ENGINE_REPLY_DELAY
	// ReplyTimeout is the service's ENGINE_REPLY_TIMEOUT; 0 for its default.
	ReplyTimeout time.Duration
	Coalesce     bool   // ENGINE_COALESCE, and all requests for one user
	Durable      string // ENGINE_DURABLE_SEND; "replica" starts a replica
	MemLimit     string // the service's GOMEMLIMIT; "" leaves it unset
	// Floor runs cmd/loadtest/floor instead of ensure-user, and no Redis
	// or Engine: the HTTP stack with the raw check alone.
	Floor bool
}

// Commands the other parties send, to tell the service's own from them in
// INFO commandstats. XADD is split by stream instead (XINFO entries-added).
var (
	engineCommands = []string{"xreadgroup", "xack", "sadd", "xautoclaim", "xgroup|create", "xgroup|createconsumer"}
	toolCommands   = []string{"config|resetstat", "info", "xinfo|stream", "scan", "hello", "client|setinfo"}
	// replicaCommands are the replication traffic (the durable scenario).
	replicaCommands = []string{"replconf", "psync", "sync"}
)

// sender names who sends cmd, for the report.
func sender(cmd string) string {
	switch {
	case slices.Contains(engineCommands, cmd):
		return "engine"
	case slices.Contains(toolCommands, cmd):
		return "tool"
	case slices.Contains(replicaCommands, cmd):
		return "replica"
	}
	return "service"
}

// A command of the service that Redis saw at most this often, both per
// second of the run and per request, is counted as background work, not as
// part of the hot path.
const (
	maxBackgroundPerSecond  = 2
	maxBackgroundPerRequest = 0.01
)

// result is one run of one scenario.
type result struct {
	Scenario string `json:"scenario"`
	Rep      int    `json:"rep"`
	Skipped  string `json:"skipped,omitempty"`

	Requests  int64            `json:"requests"`
	Confirmed int64            `json:"confirmed"`
	Status    map[string]int64 `json:"status"`
	Outcomes  map[string]int64 `json:"outcomes"`
	Problems  []string         `json:"problems,omitempty"`
	Exhausted bool             `json:"tokens_exhausted,omitempty"`
	Missed    int64            `json:"missed_sends,omitempty"`

	RawES256 float64 `json:"raw_es256_cpu_us"` // the calibration of the same run

	Seconds float64 `json:"seconds"`
	RPS     float64 `json:"rps"`
	P50     float64 `json:"p50_ms"`
	P90     float64 `json:"p90_ms"`
	P99     float64 `json:"p99_ms"`
	P999    float64 `json:"p999_ms"`
	Max     float64 `json:"max_ms"`

	// CPU per request, in microseconds.
	ServiceCPU  float64 `json:"service_cpu_us"`
	ServiceUser float64 `json:"service_user_us"`
	ServiceSys  float64 `json:"service_sys_us"`
	RedisCPU    float64 `json:"redis_cpu_us"`
	EngineCPU   float64 `json:"engine_cpu_us"`
	ToolCPU     float64 `json:"loadgen_cpu_us"`

	PeakRSSMB      float64 `json:"service_peak_rss_mb"` // VmHWM, the largest instance's
	IdleRSSMB      float64 `json:"service_idle_rss_mb"` // VmRSS of the largest instance after the warm-up, just before the load
	PeakGoroutines int64   `json:"service_peak_goroutines"`
	PeakWaiting    int64   `json:"service_peak_waiting"`
	PeakHeapMB     float64 `json:"service_peak_heap_inuse_mb"`  // sampled go_memstats_heap_inuse_bytes
	PeakStackMB    float64 `json:"service_peak_stack_inuse_mb"` // sampled go_memstats_stack_inuse_bytes
	PeakParked     int64   `json:"service_peak_parked"`         // sampled ensure_user_http_parked_connections

	Commands         map[string]int64 `json:"redis_commands"`
	ServiceXadd      int64            `json:"service_xadd"`
	EngineXadd       int64            `json:"engine_xadd"`
	XaddPerRequest   float64          `json:"service_xadd_per_request"`
	XreadPerRequest  float64          `json:"xread_per_request"`
	OtherServiceCmds map[string]int64 `json:"other_service_commands"` // per request: the hot path
	BackgroundCmds   map[string]int64 `json:"background_commands"`    // time-driven, rare

	// Pair is set when the run was measured interleaved with its partner
	// (a service scenario with its floor); nil for a run measured alone.
	Pair *pairing `json:"interleaved,omitempty"`

	LoadBefore string   `json:"loadavg_before"`
	LoadAfter  string   `json:"loadavg_after"`
	Notes      []string `json:"notes,omitempty"`

	lat []time.Duration
}

// correct reports whether every answer was the confirmed one.
func (r *result) correct() bool {
	return r.Skipped != "" || (r.Requests > 0 && r.Confirmed == r.Requests && len(r.Problems) == 0)
}

// env is what a scenario runs against: its own redis-server (and replica),
// engine-sim and ensure-user instances.
type env struct {
	dir      string
	redis    *proc.Child
	replica  *proc.Child
	engine   *proc.Child
	services []*proc.Child
	urls     []string
	rc       *redisClient
}

func (e *env) stop() {
	for _, s := range e.services {
		_ = s.Stop(syscall.SIGTERM, 10*time.Second)
	}
	_ = e.engine.Stop(syscall.SIGTERM, 5*time.Second)
	if e.rc != nil {
		e.rc.close()
	}
	_ = e.replica.Stop(syscall.SIGTERM, 5*time.Second)
	_ = e.redis.Stop(syscall.SIGTERM, 5*time.Second)
}

// start brings up the scenario's processes and waits until every service
// instance is ready.
func (t *tool) start(ctx context.Context, sc scenario, dir string) (*env, error) {
	e := &env{dir: dir}
	var (
		addr string
		err  error
	)
	if sc.Floor {
		p, err := startProc(dir, "floor", t.serviceCPUs, t.bins[floorPkg], map[string]string{
			"FLOOR_ADDR": "127.0.0.1:0", "FLOOR_KEY": t.idp.publicKey(),
		})
		if err != nil {
			return e, err
		}
		e.services = append(e.services, p)
		return e, e.listening(ctx)
	}
	if e.redis, addr, err = startRedis(ctx, dir, "redis", t.helperCPUs); err != nil {
		return e, err
	}
	if e.rc, err = dialRedis(addr); err != nil {
		return e, err
	}
	if sc.Durable == "replica" {
		host, port, _ := strings.Cut(addr, ":")
		if e.replica, _, err = startRedis(ctx, dir, "redis-replica", t.helperCPUs, "--replicaof", host, port); err != nil {
			return e, err
		}
		if err := waitReplica(ctx, e.rc); err != nil {
			return e, err
		}
	}
	redisURL := "redis://" + addr + "/0"
	engineEnv := map[string]string{
		"REDIS_URL":            redisURL,
		"ENGINE_REPLY_DELAY":   sc.EngineDelay.String(),
		"ENGINE_MAX_IN_FLIGHT": strconv.Itoa(max(20000, 2*sc.Requests)),
		"ENGINE_CLAIM_IDLE":    (30*time.Second + 2*sc.EngineDelay).String(),
		"LOG_LEVEL":            "info",
	}
	maps.Copy(engineEnv, t.engineEnv)
	if e.engine, err = startProc(dir, "engine-sim", t.helperCPUs, t.bins["./cmd/engine-sim"], engineEnv); err != nil {
		return e, err
	}
	if _, err := e.engine.WaitLog(ctx, "engine running"); err != nil {
		return e, err
	}
	for i := range max(1, sc.Instances) {
		svcEnv := map[string]string{
			"HTTP_ADDR":          "127.0.0.1:0",
			"REDIS_URL":          redisURL,
			"JWKS_URL":           t.idp.url,
			"JWT_ISSUER":         issuer,
			"JWT_AUDIENCE":       audience,
			"LOG_LEVEL":          "info",
			"SHUTDOWN_DELAY":     "0s",
			"ENGINE_MAX_WAITING": strconv.Itoa(max(20000, 2*sc.Requests)),
			"INSTANCE_ID":        "lt" + strconv.Itoa(i),
		}
		if sc.ReplyStream != "" {
			svcEnv["ENGINE_REPLY_STREAM"] = sc.ReplyStream
		}
		if sc.Coalesce {
			svcEnv["ENGINE_COALESCE"] = "true"
		}
		if sc.ReplyTimeout > 0 {
			svcEnv["ENGINE_REPLY_TIMEOUT"] = sc.ReplyTimeout.String()
			svcEnv["SHUTDOWN_TIMEOUT"] = (sc.ReplyTimeout + 10*time.Second).String() // must exceed the reply timeout
		}
		if sc.Durable != "" {
			svcEnv["ENGINE_DURABLE_SEND"] = sc.Durable
		}
		if sc.MemLimit != "" {
			svcEnv["GOMEMLIMIT"] = sc.MemLimit
		}
		maps.Copy(svcEnv, t.serviceEnv)
		p, err := startProc(dir, "ensure-user-"+strconv.Itoa(i), t.serviceCPUs, t.bins[servicePkg], svcEnv)
		if err != nil {
			return e, err
		}
		e.services = append(e.services, p)
	}
	return e, e.listening(ctx)
}

// listening waits until every service process listens and is ready, and
// notes their URLs.
func (e *env) listening(ctx context.Context) error {
	for _, p := range e.services {
		l, err := p.WaitLog(ctx, "listening")
		if err != nil {
			return err
		}
		a, _ := l["addr"].(string)
		e.urls = append(e.urls, "http://"+a)
	}
	for i, u := range e.urls {
		if err := waitReady(ctx, u); err != nil {
			return fmt.Errorf("%s: %w\n%s", e.services[i].Name, err, e.services[i].Tail(2000))
		}
	}
	return nil
}

// waitReplica waits until a replica is connected to the primary and in sync.
func waitReplica(ctx context.Context, rc *redisClient) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		s, err := rc.do(ctx, "INFO", "replication").ToString()
		if err == nil && strings.Contains(s, "connected_slaves:1") && strings.Contains(s, "state=online") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replica never came online: %w (%v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond): // polling an external process
		}
	}
}

// waitReady waits up to 30 s until the service at url is ready.
func waitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return proc.WaitHTTP(ctx, url+"/readyz", http.StatusOK)
}

// snapshot is the counters read before and after a run.
type snapshot struct {
	at       time.Time
	services cpuTimes
	redis    cpuTimes
	engine   cpuTimes
	tool     cpuTimes
	reqAdded int64
	repAdded int64
}

func (t *tool) snap(ctx context.Context, e *env, replyKeys []string) (snapshot, error) {
	s := snapshot{at: time.Now()}
	var errs []error
	var err error
	s.services, err = servicesCPU(e)
	errs = append(errs, err)
	s.tool, err = procCPU("self")
	errs = append(errs, err)
	if e.redis == nil { // the floor: no Redis, no Engine
		return s, errors.Join(errs...)
	}
	s.redis, err = procCPU(strconv.Itoa(e.redis.Pid()))
	errs = append(errs, err)
	s.engine, err = procCPU(strconv.Itoa(e.engine.Pid()))
	errs = append(errs, err)
	s.reqAdded, err = e.rc.entriesAdded(ctx, requestStream)
	errs = append(errs, err)
	for _, k := range replyKeys {
		n, err := e.rc.entriesAdded(ctx, k)
		errs = append(errs, err)
		s.repAdded += n
	}
	return s, errors.Join(errs...)
}

// sampler polls each instance's /metrics and VmRSS while a run lasts.
type sampler struct {
	mu         sync.Mutex
	goroutines int64
	waiting    int64
	parked     int64
	heap       float64 // MB
	stack      float64 // MB
	stop       chan struct{}
	done       chan struct{}
}

func startSampler(e *env, every time.Duration) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 5 * time.Second, Transport: newTransport(len(e.urls))}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			for _, u := range e.urls {
				m, err := proc.Scrape(context.Background(), client, u+"/metrics", "go_goroutines", "ensure_user_requests_waiting",
					"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "ensure_user_http_parked_connections")
				if err != nil {
					continue
				}
				s.mu.Lock()
				s.goroutines = max(s.goroutines, int64(m["go_goroutines"]))
				s.waiting = max(s.waiting, int64(m["ensure_user_requests_waiting"]))
				s.parked = max(s.parked, int64(m["ensure_user_http_parked_connections"]))
				s.heap = max(s.heap, m["go_memstats_heap_inuse_bytes"]/(1<<20))
				s.stack = max(s.stack, m["go_memstats_stack_inuse_bytes"]/(1<<20))
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// finish stops the sampler and raises res's sampled peaks to what it saw,
// so that the samplers of several slices of one run add up to the run's
// peaks.
func (s *sampler) finish(res *result) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	res.PeakGoroutines, res.PeakWaiting = max(res.PeakGoroutines, s.goroutines), max(res.PeakWaiting, s.waiting)
	res.PeakParked = max(res.PeakParked, s.parked)
	res.PeakHeapMB, res.PeakStackMB = max(res.PeakHeapMB, s.heap), max(res.PeakStackMB, s.stack)
}

// runScenario runs sc once against a fresh environment.
func (t *tool) runScenario(ctx context.Context, sc scenario, rep int) (*result, error) {
	res := &result{Scenario: sc.Name, Rep: rep, LoadBefore: loadAvg()}
	dir, err := os.MkdirTemp(t.workDir, sc.Name+"-")
	if err != nil {
		return nil, err
	}
	e, err := t.start(ctx, sc, dir)
	defer func() {
		e.stop()
		if t.keepLogs {
			return
		}
		_ = os.RemoveAll(dir)
	}()
	if err != nil {
		return nil, fmt.Errorf("%s: start: %w", sc.Name, err)
	}

	replyKeys := []string{replyStream}
	if sc.Floor {
		replyKeys = nil
	}
	if sc.ReplyStream == perInstance {
		replyKeys = nil
		for _, p := range e.services {
			l, err := p.WaitLog(ctx, "reply reader started")
			if err != nil {
				return nil, err
			}
			stream, _ := l["stream"].(string)
			if strings.Contains(stream, "{instance}") || stream == replyStream {
				res.Skipped = fmt.Sprintf("per-instance reply streams are not implemented by this build: the reply reader reads %q", stream)
				return res, nil
			}
			replyKeys = append(replyKeys, stream)
		}
	}

	client, transport := clientFor(sc)
	defer transport.CloseIdleConnections()
	if err := t.warmUp(ctx, sc, rep, e, client); err != nil {
		return nil, err
	}

	tokens := t.tokens
	if sc.Kind == "burst" {
		tokens = t.tokens[:sc.Requests]
		if sc.Coalesce {
			tokens = t.oneUser[:sc.Requests]
		}
	}
	if res.IdleRSSMB, err = largestMB(e, "VmRSS"); err != nil {
		return nil, err
	}
	if e.rc != nil {
		if err := e.rc.resetStats(ctx); err != nil {
			return nil, err
		}
	}
	before, err := t.snap(ctx, e, replyKeys)
	if err != nil {
		return nil, err
	}
	every := 500 * time.Millisecond
	if sc.Kind == "burst" {
		every = 100 * time.Millisecond
	}
	smp := startSampler(e, every)
	var lr loadResult
	switch sc.Kind {
	case "closed":
		lr = closedLoop(ctx, client, e.urls, sc.Concurrency, tokens, t.duration)
	case "open":
		lr = openLoop(ctx, client, e.urls, sc.Rate, tokens, t.duration, 20000)
	case "burst":
		lr, err = burst(ctx, e.urls, tokens, 60*time.Second)
	}
	smp.finish(res)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sc.Name, err)
	}
	after, err := t.snap(ctx, e, replyKeys)
	if err != nil {
		return nil, err
	}
	cmds := map[string]int64{}
	if e.rc != nil {
		if cmds, err = e.rc.commandStats(ctx); err != nil {
			return nil, err
		}
	}
	if res.PeakRSSMB, err = largestMB(e, "VmHWM"); err != nil {
		return nil, err
	}
	t.fill(res, sc, lr, before, after, cmds)
	res.LoadAfter = loadAvg()
	return res, nil
}

// clientFor is the load generator's client for sc: one idle keep-alive
// connection kept per worker (2048 for the open loop, to keep what a stall
// opened: no new connections, no SYN queue, mid-run). The caller closes the
// transport's idle connections when done.
func clientFor(sc scenario) (*http.Client, *http.Transport) {
	idle := max(sc.Concurrency, 64) + 16
	if sc.Kind == "open" {
		idle = 2048
	}
	transport := newTransport(idle)
	return &http.Client{Transport: transport, Timeout: 60 * time.Second}, transport
}

// warmUp opens every connection the run of sc will use and warms the
// Engine's consumer group and the key set, with requests of users the run
// does not use; each answer must be the confirmed one, else the error wraps
// errIncorrect.
func (t *tool) warmUp(ctx context.Context, sc scenario, rep int, e *env, client *http.Client) error {
	warmN := max(8, min(sc.Concurrency, 256))
	warmTokens, err := t.idp.mintUsers(fmt.Sprintf("warm-%s-%d", sc.Name, rep), warmN, 2*time.Hour)
	if err != nil {
		return err
	}
	if sc.Kind != "closed" && sc.Kind != "open" {
		warmN = 8
	}
	w := closedLoop(ctx, client, e.urls, warmN, warmTokens[:warmN], time.Minute)
	if w.tally.outcomes[okOutcome] != int64(warmN) {
		return fmt.Errorf("%s: warm-up: %w: %v %v", sc.Name, errIncorrect, w.tally.outcomes, w.tally.errors)
	}
	return nil
}

// largestMB is the largest value of the /proc status field key (VmRSS,
// VmHWM) over e's service processes, in MB.
func largestMB(e *env, key string) (float64, error) {
	mb := 0.0
	for _, p := range e.services {
		kb, err := proc.StatusKB(p.Pid(), key)
		if err != nil {
			return 0, err
		}
		mb = max(mb, float64(kb)/1024)
	}
	return mb, nil
}

// fill computes the figures of res from what the run measured.
func (t *tool) fill(res *result, sc scenario, lr loadResult, before, after snapshot, cmds map[string]int64) {
	tl := lr.tally
	slices.Sort(tl.lat)
	res.lat = tl.lat
	res.Requests = int64(len(tl.lat))
	res.Confirmed = tl.outcomes[okOutcome]
	res.Status, res.Outcomes, res.Problems = tl.status, tl.outcomes, tl.errors
	res.Exhausted, res.Missed = lr.exhausted, lr.missed
	res.Seconds = lr.elapsed.Seconds()
	if res.Seconds > 0 {
		res.RPS = float64(res.Requests) / res.Seconds
	}
	ms := func(q float64) float64 {
		if len(tl.lat) == 0 {
			return 0
		}
		i := min(len(tl.lat)-1, int(q*float64(len(tl.lat))))
		return float64(tl.lat[i]) / float64(time.Millisecond)
	}
	res.P50, res.P90, res.P99, res.P999 = ms(0.50), ms(0.90), ms(0.99), ms(0.999)
	if len(tl.lat) > 0 {
		res.Max = float64(tl.lat[len(tl.lat)-1]) / float64(time.Millisecond)
	}
	n := float64(max(1, res.Requests))
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / n }
	svc := after.services.sub(before.services)
	res.ServiceCPU, res.ServiceUser, res.ServiceSys = us(svc.total()), us(svc.user), us(svc.sys)
	res.RedisCPU = us(after.redis.sub(before.redis).total())
	res.EngineCPU = us(after.engine.sub(before.engine).total())
	res.ToolCPU = us(after.tool.sub(before.tool).total())

	// Time-driven commands count per second of the whole time the service
	// was measured: an interleaved member also idles while its partner runs.
	span := res.Seconds
	if res.Pair != nil {
		span = max(span, res.Pair.WindowSeconds)
	}
	res.Commands = cmds
	res.ServiceXadd = after.reqAdded - before.reqAdded
	res.EngineXadd = after.repAdded - before.repAdded
	res.XaddPerRequest = float64(res.ServiceXadd) / n
	res.XreadPerRequest = float64(cmds["xread"]) / n
	res.OtherServiceCmds = map[string]int64{}
	res.BackgroundCmds = map[string]int64{}
	for c, calls := range cmds {
		switch {
		case c == "xadd", c == "xread", sender(c) != "service":
		case float64(calls) <= maxBackgroundPerSecond*span && float64(calls) < maxBackgroundPerRequest*n:
			// Rare, time-driven commands (the bus's upkeep and backlog
			// checks, a readiness PING): not per request.
			res.BackgroundCmds[c] = calls
		default:
			res.OtherServiceCmds[c] = calls
		}
	}
	if extra := cmds["xadd"] - res.ServiceXadd - res.EngineXadd; extra != 0 {
		res.OtherServiceCmds["xadd (unattributed)"] = extra
	}
	if sc.Durable != "" && cmds["wait"] == 0 && cmds["waitaof"] == 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("ENGINE_DURABLE_SEND=%s sent no WAIT/WAITAOF: the bus of this build does not implement it", sc.Durable))
	}
	if lr.exhausted {
		res.Notes = append(res.Notes, "the token pool ran out before the duration: raise -max-rate")
	}
	if sc.Kind == "burst" && res.PeakWaiting < int64(sc.Requests) {
		res.Notes = append(res.Notes, fmt.Sprintf("at most %d requests were seen waiting at once (sampled every 100 ms)", res.PeakWaiting))
	}
}

// workDirFor returns a directory for the logs of scenario runs.
func workDirFor(out string) (string, error) {
	d := filepath.Join(out, "logs")
	return d, os.MkdirAll(d, 0o755)
}
