// Package testenv starts the real things tests talk to: a redis-server of the
// test's own on a free loopback port, a local JWKS server, the service binary.
// Nothing here ever touches a shared instance.
package testenv

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/proc"
)

// RequireRealRedisEnv, set to 1 (CI does), turns the embedded miniredis
// fallback into a test failure: integration tests must run against a real
// redis-server there.
const RequireRealRedisEnv = "REQUIRE_REAL_REDIS"

// redisStartTimeout bounds how long a redis-server may take to answer PING.
const redisStartTimeout = 10 * time.Second

// RedisOption configures StartRedis.
type RedisOption func(*redisConfig)

type redisConfig struct {
	persist bool
	dir     string
	args    []string
}

// WithRedisPersistence turns on the append-only file with fsync on every
// write, so that data survives Kill, Stop and Restart.
func WithRedisPersistence() RedisOption {
	return func(c *redisConfig) { c.persist = true }
}

// WithRedisDir sets the data directory (default: a fresh t.TempDir()), for
// example to start a server on the files another one left.
func WithRedisDir(dir string) RedisOption {
	return func(c *redisConfig) { c.dir = dir }
}

// WithRedisArgs appends redis-server arguments; later arguments override
// earlier ones, so these override the defaults.
func WithRedisArgs(args ...string) RedisOption {
	return func(c *redisConfig) { c.args = append(c.args, args...) }
}

// Redis is a redis-server owned by one test: on a free loopback port, with
// its own data directory, stopped at cleanup. When redis-server is not
// installed it is an embedded miniredis instead (see Embedded), unless
// REQUIRE_REAL_REDIS=1.
type Redis struct {
	t    testing.TB
	port int
	dir  string
	args []string
	mini *miniredis.Miniredis
	keep bool // data survives restarts

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	out     bytes.Buffer
	client  rueidis.Client
	clientE error
}

// StartRedis starts a redis-server for t with proc.RedisArgs (a free
// loopback port, no persistence) and a temporary --dir, plus opts, waits
// until it answers PING, and stops it at cleanup.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	var c redisConfig
	for _, o := range opts {
		o(&c)
	}
	if c.dir == "" {
		c.dir = t.TempDir()
	}
	r := &Redis{t: t, dir: c.dir, keep: c.persist}
	if c.persist {
		r.args = append(r.args, "--appendonly", "yes", "--appendfsync", "always")
	}
	r.args = append(r.args, c.args...)
	t.Cleanup(r.cleanup)

	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv(RequireRealRedisEnv) == "1" {
			t.Fatalf("redis-server not found and %s=1: %v", RequireRealRedisEnv, err)
		}
		t.Logf("redis-server not found (%v): using an embedded miniredis", err)
		r.mini = miniredis.NewMiniRedis()
		if err := r.mini.Start(); err != nil {
			t.Fatalf("start miniredis: %v", err)
		}
		_, port, _ := net.SplitHostPort(r.mini.Addr())
		r.port, _ = strconv.Atoi(port)
		return r
	}
	// A free port can be taken by someone else before redis-server binds it.
	for attempt := 1; ; attempt++ {
		r.port = freePort(t)
		err := r.start()
		if err == nil {
			return r
		}
		if attempt == 3 {
			t.Fatalf("start redis-server: %v\n%s", err, r.output())
		}
	}
}

// Embedded reports whether r is the miniredis fallback, not a redis-server.
func (r *Redis) Embedded() bool { return r.mini != nil }

// SkipIfEmbedded skips t when r is the miniredis fallback, which cannot do
// what the test needs (why). It never skips under REQUIRE_REAL_REDIS=1.
func (r *Redis) SkipIfEmbedded(t testing.TB, why string) {
	t.Helper()
	if r.Embedded() {
		t.Skipf("needs a real redis-server: %s", why)
	}
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL is a REDIS_URL for the server, database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Dir is the server's data directory; it survives Restart.
func (r *Redis) Dir() string { return r.dir }

// Kill kills the server with SIGKILL and waits for it to exit: clients see
// their connections reset, with no goodbye.
func (r *Redis) Kill() { r.halt(syscall.SIGKILL) }

// Stop shuts the server down with SIGTERM (flushing the append-only file when
// persistence is on) and waits for it to exit.
func (r *Redis) Stop() { r.halt(syscall.SIGTERM) }

// Restart starts the server again on the same port and directory, stopping
// it first if it runs, and waits until it answers PING. Data survives only
// with WithRedisPersistence.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	if r.mini != nil {
		// miniredis' Close cancels the context its blocking commands wait on,
		// and Restart does not renew it: without this, XREAD BLOCK hangs.
		r.mini.Lock()
		r.mini.Ctx, r.mini.CtxCancel = context.WithCancel(context.Background())
		r.mini.Unlock()
		if err := r.mini.Restart(); err != nil {
			r.t.Fatalf("restart miniredis: %v", err)
		}
		if !r.keep {
			r.mini.FlushAll()
		}
		return
	}
	if err := r.start(); err != nil {
		r.t.Fatalf("restart redis-server: %v\n%s", err, r.output())
	}
}

// Client returns a client for raw commands in assertions, created on first
// use and closed at cleanup, and by Kill, Stop and Restart, so that a client
// taken after those never carries a connection to the old process.
func (r *Redis) Client() rueidis.Client {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil && r.clientE == nil {
		r.client, r.clientE = rueidis.NewClient(rueidis.ClientOption{
			InitAddress:       []string{r.Addr()},
			DisableCache:      true,
			ForceSingleClient: true, // construct even while the server is down
			DisableRetry:      true,
			AlwaysPipelining:  true, // notice killed connections at once
			Dialer:            net.Dialer{Timeout: time.Second},
		})
		if r.client != nil {
			r.clientE = nil
		}
	}
	if r.clientE != nil {
		r.t.Fatalf("redis test client: %v", r.clientE)
	}
	return r.client
}

// Do runs one raw command, such as Do(ctx, "XRANGE", "s", "-", "+"), and
// returns its result, Redis errors included. It is not for blocking commands.
func (r *Redis) Do(ctx context.Context, args ...string) rueidis.RedisResult {
	c := r.Client()
	return c.Do(ctx, c.B().Arbitrary(args[0]).Args(args[1:]...).Build())
}

// MustDo runs one raw command and fails the test on any error.
func (r *Redis) MustDo(ctx context.Context, args ...string) rueidis.RedisResult {
	r.t.Helper()
	res := r.Do(ctx, args...)
	if err := res.Error(); err != nil {
		r.t.Fatalf("redis %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// RedisClients lists the server's connections (CLIENT LIST), one map of
// field to value per connection, such as "id", "cmd", "name".
func (r *Redis) RedisClients(ctx context.Context) []map[string]string {
	r.t.Helper()
	s, err := r.MustDo(ctx, "CLIENT", "LIST").ToString()
	if err != nil {
		r.t.Fatalf("CLIENT LIST: %v", err)
	}
	var list []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(verbatim(s)), "\n") {
		c := map[string]string{}
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			c[k] = v
		}
		list = append(list, c)
	}
	return list
}

// Holds reports whether a client is blocked (flags b) in cmd (lower case,
// such as "xadd"): for example an XADD that CLIENT PAUSE WRITE holds.
func (r *Redis) Holds(ctx context.Context, cmd string) bool {
	r.t.Helper()
	for _, c := range r.RedisClients(ctx) {
		if c["cmd"] == cmd && strings.Contains(c["flags"], "b") {
			return true
		}
	}
	return false
}

// RedisCommandCalls reports how many times the server ran cmd (lower case,
// such as "xadd") since start or CONFIG RESETSTAT, from INFO commandstats.
func (r *Redis) RedisCommandCalls(ctx context.Context, cmd string) int64 {
	r.t.Helper()
	s, err := r.MustDo(ctx, "INFO", "commandstats").ToString()
	if err != nil {
		r.t.Fatalf("INFO commandstats: %v", err)
	}
	prefix := "cmdstat_" + cmd + ":calls="
	for _, line := range strings.Split(verbatim(s), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
			return n
		}
	}
	return 0
}

// Version is the server's redis_version, from INFO server.
func (r *Redis) Version(ctx context.Context) string {
	r.t.Helper()
	s, err := r.MustDo(ctx, "INFO", "server").ToString()
	if err != nil {
		r.t.Fatalf("INFO server: %v", err)
	}
	for _, line := range strings.Split(verbatim(s), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return ""
}

// VersionAtLeast reports whether a "major.minor.patch" version, such as
// Redis.Version returns, is at least major.minor.
func VersionAtLeast(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	return err1 == nil && err2 == nil && (ma > major || (ma == major && mi >= minor))
}

// verbatim strips the format prefix of a RESP3 verbatim string ("txt:").
func verbatim(s string) string { return strings.TrimPrefix(s, "txt:") }

func (r *Redis) start() error {
	cmd := exec.Command("redis-server", append(proc.RedisArgs(r.port, r.dir), r.args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so Kill reaches forked children too
	r.mu.Lock()
	r.out.Reset()
	cmd.Stdout = lockedWriter{&r.mu, &r.out}
	cmd.Stderr = cmd.Stdout
	r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()

	if err := proc.WaitRedis(context.Background(), r.Addr(), redisStartTimeout, exited); err != nil {
		r.halt(syscall.SIGKILL)
		return err
	}
	return nil
}

func (r *Redis) halt(sig syscall.Signal) {
	r.mu.Lock()
	client := r.client
	r.client, r.clientE = nil, nil
	r.mu.Unlock()
	if client != nil {
		client.Close()
	}
	if r.mini != nil {
		r.mini.Close()
		return
	}
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-exited:
	case <-time.After(redisStartTimeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

func (r *Redis) cleanup() {
	r.halt(syscall.SIGKILL)
	if out := r.output(); r.t.Failed() && out != "" {
		r.t.Logf("redis-server on port %d said:\n%s", r.port, out)
	}
}

func (r *Redis) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

func freePort(t testing.TB) int {
	t.Helper()
	port, err := proc.FreePort()
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return port
}

// FreeRedisPort returns a loopback port nobody listens on right now, for
// tests that need a Redis address that refuses connections.
func FreeRedisPort(t testing.TB) int { return freePort(t) }

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
