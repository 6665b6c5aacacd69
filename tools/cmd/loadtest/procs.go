package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ensure-user/ensure-user/internal/proc"
)

// startProc runs bin with args and env (added to PATH and HOME only, so the
// caller's variables cannot leak in), pinned to cpus with taskset when cpus
// is not empty, its output in dir/name.log. taskset execs the program in
// place, so the child's pid is the program's own.
func startProc(dir, name, cpus, bin string, env map[string]string, args ...string) (*proc.Child, error) {
	if cpus != "" {
		args = append([]string{"-c", cpus, bin}, args...)
		bin = "taskset"
	}
	vars := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	return proc.Start(name, bin, filepath.Join(dir, name+".log"), vars, args...)
}

// startRedis starts a redis-server of the tool's own on a free loopback port
// (never a shared instance), without persistence; extra args are appended.
func startRedis(ctx context.Context, dir, name, cpus string, extra ...string) (*proc.Child, string, error) {
	var lastErr error
	for range 3 { // the free port may be taken before redis-server binds it
		port, err := proc.FreePort()
		if err != nil {
			return nil, "", err
		}
		rdir := filepath.Join(dir, name)
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			return nil, "", err
		}
		p, err := startProc(dir, name, cpus, "redis-server", nil, append(proc.RedisArgs(port, rdir), extra...)...)
		if err != nil {
			return nil, "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = proc.WaitRedis(ctx, addr, 10*time.Second, p.Done()); lastErr == nil {
			return p, addr, nil
		}
		lastErr = fmt.Errorf("%w:\n%s", lastErr, p.Tail(2000))
		_ = p.Stop(syscall.SIGTERM, time.Second)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", lastErr
}

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit, for the tool
// and (it is inherited) every process it starts, and returns the new limit.
// Calling Setrlimit also stops Go from restoring the old soft limit in
// children.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}

// pinSelf pins every thread of this process to cpu; threads created later
// inherit the mask of the thread that creates them.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pin thread %d: %w", tid, err)
		}
	}
	return nil
}

// onCPU runs f on the calling goroutine's OS thread pinned to cpu, then
// gives that thread back its previous CPU mask.
func onCPU(cpu int, f func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return err
	}
	f()
	return unix.SchedSetaffinity(0, &old)
}
