package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/ensure-user/ensure-user/internal/proc"
)

// redisServer is the soak's own redis-server, with its append-only file, on
// a fixed port and directory so that it can be restarted with its data.
type redisServer struct {
	port int
	dir  string
	proc *proc.Child
}

func (r *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// start starts redis-server and waits until it answers PING.
func (r *redisServer) start(ctx context.Context) error {
	args := append(proc.RedisArgs(r.port, r.dir), "--appendonly", "yes", "--appendfsync", "everysec")
	p, err := proc.Start("redis-server", "redis-server", filepath.Join(r.dir, "redis.log"),
		[]string{"PATH=" + os.Getenv("PATH")}, args...)
	if err != nil {
		return err
	}
	r.proc = p
	return proc.WaitRedis(ctx, r.addr(), 10*time.Second, p.Done())
}

// restart stops redis-server with sig (SIGKILL: a crash; SIGTERM: a clean
// stop) and starts it again on the same port and files.
func (r *redisServer) restart(ctx context.Context, sig syscall.Signal) error {
	_ = r.proc.Stop(sig, 10*time.Second)
	return r.start(ctx)
}

// httpStatus returns the status of GET url, or 0 when it fails.
func httpStatus(client *http.Client, url string) int {
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// openFiles counts the descriptors process pid has open (-1 when unknown).
func openFiles(pid int) int {
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}
