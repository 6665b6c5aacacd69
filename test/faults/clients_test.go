package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// TestClientGoneWhileWaiting: a client hangs up while its request waits for
// the Engine's reply. The command stays sent (it is in the stream, counted
// as sent), the outcome is counted as client_gone, and the service logs it
// with the id of the command that stays.
func TestClientGoneWhileWaiting(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{engine: noEngine, env: map[string]string{"ENGINE_REPLY_TIMEOUT": "10s", "SHUTDOWN_TIMEOUT": "15s"}})
	tok := r.token("gone")
	ctx, hangUp := context.WithCancel(context.Background())
	done := make(chan testenv.Answer, 1)
	go func() { done <- r.post(ctx, r.client, tok) }()
	if err := poll(10*time.Second, func() bool { return r.xlen(requestStream) == 1 }); err != nil {
		t.Fatalf("the command never reached the stream: %v", err)
	}
	hangUp()
	if a := <-done; !errors.Is(a.Err, context.Canceled) {
		t.Fatalf("the client did not hang up: %s", a)
	}
	assertClientGone(t, r, "gone")
}

// assertClientGone checks what the service did with the one request of
// userID, whose client hung up: its command is in the stream, counted as
// sent (not as an unknown send); the outcome is client_gone, the request
// line says 499, and a line names the command that stays.
func assertClientGone(t *testing.T, r *rig, userID string) {
	t.Helper()
	r.waitMetric(mClientGone, 10*time.Second, func(v float64) bool { return v == 1 })
	lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := r.svc.WaitLog(lctx, "client went away while waiting; the command stays sent")
	if err != nil {
		t.Fatal(err)
	}
	reqs := r.streamRequests()
	if len(reqs) != 1 || reqs[0].RequestID != l["engine_request_id"] || reqs[0].UserID != userID {
		t.Errorf("logged %v; the stream holds %+v", l, reqs)
	}
	if sent, unknown := r.metric(mSent), r.metric(mSendUnknown); sent != 1 || unknown != 0 {
		t.Errorf("%s = %v, %s = %v; want 1 and 0", mSent, sent, mSendUnknown, unknown)
	}
	lines := waitLogs(t, r.svc.Process, 1, func(l map[string]any) bool { return l["msg"] == "request" })
	if len(lines) != 1 || lines[0]["outcome"] != "client_gone" || lines[0]["status"] != float64(499) {
		t.Errorf("request lines %v, want one client_gone 499", lines)
	}
}

// TestClientGoneDuringXadd: the client hangs up while Redis still holds the
// request's XADD (CLIENT PAUSE WRITE). The command goes out when Redis
// resumes, and the service knows it: counted as sent, the outcome is
// client_gone (not an unknown send, 502), and the log names the command that
// stays. CI met this race by chance in TestClientGoneWhileWaiting.
func TestClientGoneDuringXadd(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{engine: noEngine, env: map[string]string{"ENGINE_REPLY_TIMEOUT": "10s", "SHUTDOWN_TIMEOUT": "15s"}})
	tok := r.token("gone-mid-xadd")
	admin := context.Background()
	r.redis.MustDo(admin, "CLIENT", "PAUSE", "20000", "WRITE")
	t.Cleanup(func() { r.redis.Do(admin, "CLIENT", "UNPAUSE") })
	ctx, hangUp := context.WithCancel(context.Background())
	done := make(chan testenv.Answer, 1)
	go func() { done <- r.post(ctx, r.client, tok) }()
	if err := poll(10*time.Second, func() bool { return r.redis.Holds(admin, "xadd") }); err != nil {
		t.Fatalf("Redis never held the XADD: %v", err)
	}
	hangUp()
	if a := <-done; !errors.Is(a.Err, context.Canceled) {
		t.Fatalf("the client did not hang up: %s", a)
	}
	r.redis.MustDo(admin, "CLIENT", "UNPAUSE")
	assertClientGone(t, r, "gone-mid-xadd")
}

// readHeaderTimeout is the service's http.Server ReadHeaderTimeout: the
// default of HTTP_READ_HEADER_TIMEOUT, which the rig leaves unset.
const readHeaderTimeout = echohttp.DefaultReadHeaderTimeout

// TestSlowlorisHeadersAreCut: 20 clients trickle header bytes, one every
// 200 ms, forever. Each is cut once ReadHeaderTimeout has passed since its
// request began, and meanwhile other clients are served as usual.
func TestSlowlorisHeadersAreCut(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{engine: simEngine})
	const slow = 20
	addr := strings.TrimPrefix(r.svc.URL, "http://")
	type cut struct {
		after time.Duration
		sent  int
		err   error
	}
	cuts := make(chan cut, slow)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range slow {
		go func() {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				cuts <- cut{err: err}
				return
			}
			defer conn.Close()
			start := time.Now()
			closed := make(chan struct{})
			go func() {
				_, _ = io.Copy(io.Discard, conn) // ends when the server closes
				close(closed)
			}()
			_, _ = conn.Write([]byte("POST " + endpoint + " HTTP/1.1\r\nHost: x\r\nX-Slow: "))
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for sent := 0; ; {
				select {
				case <-closed:
					cuts <- cut{after: time.Since(start), sent: sent}
					return
				case <-ctx.Done():
					cuts <- cut{err: fmt.Errorf("still open after %s", time.Since(start))}
					return
				case <-tick.C:
					if _, err := conn.Write([]byte("a")); err == nil {
						sent++
					}
				}
			}
		}()
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	served := 0
	for got := 0; got < slow; {
		select {
		case c := <-cuts:
			got++
			switch {
			case c.err != nil:
				t.Errorf("slow client: %v", c.err)
			case c.after > readHeaderTimeout+margin:
				t.Errorf("a slow client was cut after %s (%d bytes), want about %s", c.after, c.sent, readHeaderTimeout)
			}
		case <-tick.C:
			served++
			a := r.ensure("ok-busy-" + strconv.Itoa(served))
			want(t, "a normal client meanwhile", a, 200, bodyConfirmed)
			if a.Took >= readHeaderTimeout/2 { // blocked behind the trickling clients, it would wait until they are cut
				t.Errorf("a normal client waited %s while slow clients trickled", a.Took)
			}
		}
	}
	if served < 5 {
		t.Errorf("only %d normal requests during the trickle", served)
	}
	r.assertAlive()
}

// TestTenThousandIdleKeepAliveConnections opens 10,000 keep-alive
// connections, each after one request, and leaves them idle. The service
// keeps them (its open descriptors say so), stays ready, serves a new client
// quickly, and still answers on idle connections picked at random.
func TestTenThousandIdleKeepAliveConnections(t *testing.T) {
	t.Parallel()
	const idle = 10_000
	need := uint64(idle + 2048) // plus what the process and its parallel tests use
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < need {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d descriptors the test needs", lim.Max, need)
	}
	if lim.Cur < need {
		// Set explicitly, so that children inherit it: Go raises only its own
		// soft limit at start and restores the original one for children.
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	r := newRig(t, rigOptions{engine: simEngine})
	if soft := maxOpenFiles(t, r.svc.Pid()); soft < need {
		t.Fatalf("the service may open %d files, below %d", soft, need)
	}
	addr := strings.TrimPrefix(r.svc.URL, "http://")

	conns := make([]keepAlive, idle)
	t.Cleanup(func() {
		for _, c := range conns {
			if c.conn != nil {
				_ = c.conn.(*net.TCPConn).SetLinger(0) // no TIME_WAIT left behind for other tests' ports
				_ = c.conn.Close()
			}
		}
	})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []error
	)
	next := make(chan int)
	opened := time.Now()
	for range 64 {
		wg.Go(func() {
			for i := range next {
				c, err := dialAndGet(addr)
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				}
				conns[i] = c
				mu.Unlock()
			}
		})
	}
	for i := range idle {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections failed, first: %v", len(failures), idle, failures[0])
	}
	t.Logf("%d keep-alive connections opened in %s", idle, time.Since(opened).Round(time.Millisecond))
	if fds := openFiles(t, r.svc.Pid()); fds < idle {
		t.Errorf("the service has %d descriptors open, fewer than the %d idle connections", fds, idle)
	}

	r.waitReady(5 * time.Second)
	a := r.ensure("idle-newcomer")
	want(t, "a new client among 10,000 idle connections", a, 200, bodyConfirmed)
	if a.Took > 10*time.Second { // a bound for a hang, on a loaded machine
		t.Errorf("a new client waited %s", a.Took)
	}
	for range 20 {
		c := conns[rand.N(idle)]
		if err := get(c.conn, c.br); err != nil {
			t.Errorf("an idle keep-alive connection no longer answers: %v", err)
		}
	}
	r.assertAlive()
}

// keepAlive is an open client connection and its reader.
type keepAlive struct {
	conn net.Conn
	br   *bufio.Reader
}

// dialAndGet opens a connection, sends GET /livez and reads the answer,
// leaving the connection open for reuse.
func dialAndGet(addr string) (keepAlive, error) {
	var c keepAlive
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return c, err
	}
	c.conn, c.br = conn, bufio.NewReaderSize(conn, 1024)
	return c, get(c.conn, c.br)
}

// get sends one GET /livez on conn and reads its answer.
func get(conn net.Conn, br *bufio.Reader) error {
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write([]byte("GET /livez HTTP/1.1\r\nHost: ensure-user\r\n\r\n")); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		return fmt.Errorf("GET /livez: %s, close %v", resp.Status, resp.Close)
	}
	return nil
}

// maxOpenFiles is the soft RLIMIT_NOFILE of process pid.
func maxOpenFiles(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		t.Skipf("cannot read the service's limits: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no open files limit in /proc/%d/limits", pid)
	return 0
}

// openFiles counts the descriptors process pid has open.
func openFiles(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatalf("count the service's descriptors: %v", err)
	}
	return len(entries)
}
