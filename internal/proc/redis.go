package proc

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// RedisArgs are the arguments of a redis-server of the caller's own: port on
// loopback only, data in dir, no snapshots and no append-only file, in the
// foreground, logging to stdout. Arguments appended after these override
// them (redis-server keeps the last value), such as "--appendonly", "yes".
func RedisArgs(port int, dir string) []string {
	return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--logfile", ""}
}

// Pong reports whether the Redis at addr answers PING with PONG, or asks for
// a password (it runs with --requirepass); a server still LOADING its data
// does not count.
func Pong(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: 200 * time.Millisecond}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (line == "+PONG\r\n" || strings.HasPrefix(line, "-NOAUTH"))
}

// WaitRedis waits until the Redis at addr answers PING (see Pong), polling
// every 20 ms, and fails when timeout passes, ctx ends, or exited is closed
// (the redis-server process died).
func WaitRedis(ctx context.Context, addr string, timeout time.Duration, exited <-chan struct{}) error {
	if err := WaitFor(ctx, timeout, func() bool { return Pong(ctx, addr) }, exited); err != nil {
		return fmt.Errorf("redis-server on %s did not answer PING: %w", addr, err)
	}
	return nil
}

// FreePort returns a loopback TCP port nobody listens on right now. Another
// process may take it before the caller binds it: callers retry.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
