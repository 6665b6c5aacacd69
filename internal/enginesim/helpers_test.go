package enginesim

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ensure-user/ensure-user/adapters/redisbus"
	"github.com/ensure-user/ensure-user/config"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// rueidis.NewClient probes for a cluster first; the discarded cluster
		// client schedules a topology refresh that sleeps up to about a second
		// before it finds itself closed (singleflight.go, DelayDo). Bounded,
		// and not ours.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"),
	)
}

// server is a Redis a test talks to, with a client for its own commands.
type server struct {
	addr string // host:port
	url  string
	raw  rueidis.Client
	t    testing.TB
}

// realRedis starts a redis-server of the test's own.
func realRedis(t testing.TB) *server {
	t.Helper()
	r := testenv.StartRedis(t)
	return &server{addr: r.Addr(), url: r.URL(), raw: dial(t, r.URL()), t: t}
}

// miniRedis starts an embedded miniredis, what the dev mode runs on.
func miniRedis(t testing.TB) *server {
	t.Helper()
	m := miniredis.RunT(t)
	url := "redis://" + m.Addr() + "/0"
	return &server{addr: m.Addr(), url: url, raw: dial(t, url), t: t}
}

// backends runs f against a redis-server and a miniredis, for the behaviour
// the dev mode relies on.
func backends(t *testing.T, f func(t *testing.T, srv *server)) {
	for _, b := range []struct {
		name  string
		start func(testing.TB) *server
	}{{"redis-server", realRedis}, {"miniredis", miniRedis}} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b.start(t))
		})
	}
}

// dial connects as the binary does, through redisbus.Dial.
func dial(t testing.TB, url string) rueidis.Client {
	t.Helper()
	client, closeClient, err := redisbus.Dial(redisbus.ConnConfig{URL: config.Secret(url)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeClient)
	return client
}

// testConfig names streams of the test's own, with small timings.
func testConfig(t testing.TB) Config {
	prefix := fmt.Sprintf("%s:%d", strings.ReplaceAll(t.Name(), "/", ":"), rand.Int64())
	return Config{
		RequestStream: prefix + ":requests",
		ReplyStream:   prefix + ":replies",
		Consumer:      "c1",
		ReadBlock:     100 * time.Millisecond,
	}
}

// engine is a running Sim.
type engine struct {
	sim  *Sim
	reg  *prometheus.Registry
	stop func() error // cancels Run and returns its error
	done chan struct{}
}

// startEngine runs a Sim for cfg and opts on srv until the test ends or
// stop.
func startEngine(t testing.TB, srv *server, cfg Config, opts ...Option) *engine {
	t.Helper()
	e := newEngine(t, srv, cfg, opts...)
	e.start()
	return e
}

func newEngine(t testing.TB, srv *server, cfg Config, opts ...Option) *engine {
	t.Helper()
	reg := prometheus.NewRegistry()
	sim, err := New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), dial(t, srv.url), reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e := &engine{sim: sim, reg: reg, done: make(chan struct{})}
	t.Cleanup(func() { _ = e.stop() })
	return e
}

func (e *engine) start() {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		defer close(e.done)
		errc <- e.sim.Run(ctx)
	}()
	e.stop = sync.OnceValue(func() error {
		cancel()
		return <-errc
	})
}

// commands reads engine_sim_commands_total{result}.
func (e *engine) commands(t testing.TB, result string) int {
	t.Helper()
	return int(testenv.Metric(t, e.reg, "engine_sim_commands_total", "result", result))
}

// handled is the sum of engine_sim_commands_total over results.
func (e *engine) handled(t testing.TB) int {
	t.Helper()
	n := 0
	for _, r := range []string{ResultOK, ResultExists, ResultError, ResultUnsupported, ResultDropped, ResultMalformed} {
		n += e.commands(t, r)
	}
	return n
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// do runs one raw command and fails the test on any error.
func (s *server) do(args ...string) rueidis.RedisResult {
	s.t.Helper()
	res := s.raw.Do(testContext(s.t), s.raw.B().Arbitrary(args[0]).Args(args[1:]...).Build())
	if err := res.Error(); err != nil && !rueidis.IsRedisNil(err) {
		s.t.Fatalf("redis %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// send XADDs a createUser for userID to the request stream, asking for the
// reply on replyTo.
func (s *server) send(cfg Config, userID, replyTo string) domain.Command {
	s.t.Helper()
	cmd := domain.Command{
		RequestID: domain.NewRequestID(),
		User:      domain.User{ID: userID, Email: "user@example.com"},
		SentAt:    time.Now().UTC(),
	}
	s.do("XADD", cfg.RequestStream, "*", protocol.Field, string(protocol.EncodeCommand(cmd, replyTo)))
	return cmd
}

// sendMany XADDs n commands for distinct users in one round trip and
// returns their request ids in order.
func (s *server) sendMany(cfg Config, n int, replyTo string) []string {
	s.t.Helper()
	ids := make([]string, n)
	cmds := make(rueidis.Commands, n)
	for i := range n {
		cmd := domain.Command{
			RequestID: domain.NewRequestID(),
			User:      domain.User{ID: fmt.Sprintf("user-%d", i), Email: "user@example.com"},
			SentAt:    time.Now().UTC(),
		}
		ids[i] = cmd.RequestID
		cmds[i] = s.raw.B().Xadd().Key(cfg.RequestStream).Id("*").FieldValue().
			FieldValue(protocol.Field, string(protocol.EncodeCommand(cmd, replyTo))).Build()
	}
	for _, res := range s.raw.DoMulti(testContext(s.t), cmds...) {
		if err := res.Error(); err != nil {
			s.t.Fatal(err)
		}
	}
	return ids
}

// reply is one reply entry as it is in Redis.
type reply struct {
	protocol.Reply
	raw map[string]any
}

// replies returns every reply on stream, in stream order.
func (s *server) replies(stream string) []reply {
	s.t.Helper()
	entries, err := s.do("XRANGE", stream, "-", "+").AsXRangeSlices()
	if err != nil {
		s.t.Fatal(err)
	}
	out := make([]reply, 0, len(entries))
	for _, e := range entries {
		if len(e.FieldValues) != 1 || e.FieldValues[0].Field != protocol.Field {
			s.t.Fatalf("reply entry %s has fields %v, want only %s", e.ID, e.FieldValues, protocol.Field)
		}
		var r reply
		if err := decodeJSON(e.FieldValues[0].Value, &r.Reply, &r.raw); err != nil {
			s.t.Fatalf("reply entry %s: %v", e.ID, err)
		}
		out = append(out, r)
	}
	return out
}

// waitReplies waits until stream holds at least n replies and returns them.
func (s *server) waitReplies(stream string, n int) []reply {
	s.t.Helper()
	eventually(s.t, fmt.Sprintf("%d replies on %s", n, stream), func() bool {
		return s.length(stream) >= n
	})
	return s.replies(stream)
}

// length is XLEN key.
func (s *server) length(key string) int {
	s.t.Helper()
	n, err := s.do("XLEN", key).AsInt64()
	if err != nil {
		s.t.Fatal(err)
	}
	return int(n)
}

// exists reports whether key exists.
func (s *server) exists(key string) bool {
	s.t.Helper()
	n, err := s.do("EXISTS", key).AsInt64()
	if err != nil {
		s.t.Fatal(err)
	}
	return n == 1
}

// pending is the number of entries of cfg's group delivered but not acked;
// 0 while the group does not exist.
func (s *server) pending(cfg Config) int {
	s.t.Helper()
	res, err := s.raw.Do(testContext(s.t), s.raw.B().Xpending().Key(cfg.RequestStream).
		Group(cmp.Or(cfg.Group, DefaultGroup)).Build()).ToArray()
	if isNoGroup(err) {
		return 0
	}
	if err != nil {
		s.t.Fatal(err)
	}
	n, err := res[0].AsInt64()
	if err != nil {
		s.t.Fatal(err)
	}
	return int(n)
}

// readAsConsumer reads up to n new entries as consumer, without acking
// them: a consumer that crashes right after reading.
func (s *server) readAsConsumer(cfg Config, consumer string, n int) int {
	s.t.Helper()
	streams, err := s.do("XREADGROUP", "GROUP", cmp.Or(cfg.Group, DefaultGroup), consumer,
		"COUNT", fmt.Sprint(n), "STREAMS", cfg.RequestStream, ">").AsXReadSlices()
	if err != nil {
		s.t.Fatal(err)
	}
	return len(streams[cfg.RequestStream])
}

// createGroup creates cfg's group at 0, as the Engine would.
func (s *server) createGroup(cfg Config) {
	s.t.Helper()
	s.do("XGROUP", "CREATE", cfg.RequestStream, cmp.Or(cfg.Group, DefaultGroup), "0", "MKSTREAM")
}

// decodeJSON unmarshals s into each of targets.
func decodeJSON(s string, targets ...any) error {
	for _, t := range targets {
		if err := json.Unmarshal([]byte(s), t); err != nil {
			return err
		}
	}
	return nil
}

// eventually polls cond until it holds, for state in Redis that has no
// event to wait on, failing the test after 15 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 15*time.Second, what, cond)
}

// byRequest indexes replies by request id, failing on duplicates.
func byRequest(t testing.TB, replies []reply) map[string]reply {
	t.Helper()
	m := make(map[string]reply, len(replies))
	for _, r := range replies {
		if _, dup := m[r.RequestID]; dup {
			t.Errorf("request %s answered twice", r.RequestID)
		}
		m[r.RequestID] = r
	}
	return m
}

// partition is a TCP proxy to a Redis whose line can be cut for good: a
// runner behind it then loses Redis as if its process had died, and the
// test does not depend on how a client behaves when closed while in use.
type partition struct {
	ln    net.Listener
	url   string
	cut   func()
	mu    sync.Mutex
	conns []net.Conn // nil once cut
	wg    sync.WaitGroup
}

// newPartition proxies to upstream (host:port) until Cut or the test's end.
func newPartition(t testing.TB, upstream string) *partition {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &partition{ln: ln, url: "redis://" + ln.Addr().String() + "/0", conns: []net.Conn{}}
	p.cut = sync.OnceFunc(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
		p.mu.Unlock()
		p.wg.Wait()
	})
	p.wg.Go(func() { p.accept(upstream) })
	t.Cleanup(p.Cut)
	return p
}

// Cut closes every connection and refuses new ones.
func (p *partition) Cut() { p.cut() }

func (p *partition) accept(upstream string) {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return // cut
		}
		up, err := net.Dial("tcp", upstream)
		if err != nil {
			_ = down.Close()
			continue
		}
		p.mu.Lock()
		if p.conns == nil {
			p.mu.Unlock()
			_ = down.Close()
			_ = up.Close()
			return
		}
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		p.wg.Go(func() { pipe(up, down) })
		p.wg.Go(func() { pipe(down, up) })
	}
}
