// Package proc runs the real binaries for the command-line tools that drive
// them from outside (tools/cmd/loadtest and tools/cmd/soak, in the tools
// module, whose path lies under this module's so that it may import this
// internal package) and for the tests that start them (test/testenv): child
// processes in process groups of their own with their output in a log file,
// a redis-server's arguments and readiness, free loopback ports, building
// the binaries, and reading a process's figures from /proc and a Prometheus
// endpoint. Nothing here takes a testing.TB: callers decide what a failure
// means.
package proc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Child is a running child process that leads its own process group, its
// output going to a log file.
type Child struct {
	// Name names the process in errors.
	Name string
	// Log is the path of the file that holds its output.
	Log string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, once done is closed
}

// Start runs bin with args and exactly env (nothing of the caller's
// environment leaks in), its output appended to logPath, which is created
// when missing. The child leads its own process group, so a Ctrl-C at the
// terminal reaches only the caller, which then stops its children in order.
func Start(name, bin, logPath string, env []string, args ...string) (*Child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{}, env...) // never nil: nil would mean the caller's environment
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		_ = f.Close()
		close(c.done)
	}()
	return c, nil
}

// Pid is the process id. A program started through taskset or another
// launcher that execs in place has the launcher's.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Done is closed when the process has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Running reports whether the process has not exited.
func (c *Child) Running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Err is the exit error (nil for status 0) once Done is closed.
func (c *Child) Err() error {
	<-c.done
	return c.err
}

// Stop sends sig to the process group and waits up to grace for the exit,
// then kills the group. It returns the exit error (nil for status 0), or an
// error saying the process had to be killed. A nil Child is already stopped.
func (c *Child) Stop(sig syscall.Signal, grace time.Duration) error {
	if c == nil {
		return nil
	}
	if !c.Running() {
		return c.err
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		return c.err
	case <-t.C:
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
		return fmt.Errorf("%s did not stop within %s after %s: killed", c.Name, grace, sig)
	}
}

// Tail returns the last n bytes of the process's output, for error messages.
func (c *Child) Tail(n int) string {
	b, _ := os.ReadFile(c.Log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// WaitLog waits until the process's output has a JSON line (zap) whose msg
// is msg, and returns that line. It fails when ctx ends or the process exits
// first, with the end of the output in the error.
func (c *Child) WaitLog(ctx context.Context, msg string) (map[string]any, error) {
	tick := time.NewTicker(20 * time.Millisecond) // polling a file another process writes
	defer tick.Stop()
	for {
		if line, ok := findLog(c.Log, msg); ok {
			return line, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: no %q log line: %w\n%s", c.Name, msg, ctx.Err(), c.Tail(2000))
		case <-c.done:
			if line, ok := findLog(c.Log, msg); ok {
				return line, nil
			}
			return nil, fmt.Errorf("%s exited (%v) before logging %q:\n%s", c.Name, c.err, msg, c.Tail(2000))
		case <-tick.C:
		}
	}
}

func findLog(path, msg string) (map[string]any, bool) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	needle := []byte(`"msg":"` + msg + `"`)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), needle) {
			continue
		}
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			return m, true
		}
	}
	return nil, false
}
