package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/internal/proc"
)

var (
	buildMu   sync.Mutex
	buildDir  string
	buildDone = map[string]string{}
)

// ModuleRoot returns the directory of the repository's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := proc.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// BuildBinary builds the main package pkg (e.g. "./cmd/ensure-user") once per
// test process and returns the binary's path. Under -race the binary is built
// with the race detector too, so races in the service fail the test.
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildDone[pkg]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "ensure-user-bin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d // removed with the OS temp dir; shared by the whole process
	}
	out := filepath.Join(buildDir, filepath.Base(pkg))
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = ModuleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	buildDone[pkg] = out
	return out
}

// Process is a running binary whose output the test can read.
type Process struct {
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu    sync.Mutex
	out   bytes.Buffer
	lines []map[string]any // stderr lines that were JSON (zap)
	seen  chan struct{}    // closed and replaced on every new line
}

// Start runs bin with args and env (added to a minimal environment: PATH and
// HOME only, so the developer's variables cannot leak in; env may override
// them). The process is killed at cleanup if the test did not stop it.
func Start(t testing.TB, bin string, env map[string]string, args ...string) *Process {
	t.Helper()
	return StartIn(t, "", bin, env, args...)
}

// StartIn is Start with the working directory dir ("" for the test's).
func StartIn(t testing.TB, dir, bin string, env map[string]string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	base := map[string]string{"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME"), "GORACE": "halt_on_error=1"}
	for k, v := range env {
		base[k] = v
	}
	for k, v := range base {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &Process{t: t, cmd: cmd, done: make(chan struct{}), seen: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go p.read(pr)
	go func() {
		p.err = cmd.Wait()
		_ = pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(bin), p.Output())
		}
	})
	return p
}

func (p *Process) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var m map[string]any
		isJSON := json.Unmarshal(line, &m) == nil
		p.mu.Lock()
		p.out.Write(line)
		p.out.WriteByte('\n')
		if isJSON {
			p.lines = append(p.lines, m)
		}
		close(p.seen)
		p.seen = make(chan struct{})
		p.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

// Output is everything the process printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Logs returns the JSON log lines printed so far.
func (p *Process) Logs() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]any(nil), p.lines...)
}

// WaitOutput waits until match accepts the output so far, the process exits,
// or ctx ends.
func (p *Process) WaitOutput(ctx context.Context, match func(out string, logs []map[string]any) bool) error {
	for {
		p.mu.Lock()
		out, logs, seen := p.out.String(), p.lines, p.seen
		p.mu.Unlock()
		if match(out, logs) {
			return nil
		}
		select {
		case <-seen:
		case <-p.done:
			if match(p.Output(), p.Logs()) {
				return nil
			}
			return fmt.Errorf("process exited (%v) before the expected output", p.err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for output: %w", ctx.Err())
		}
	}
}

// WaitLog waits for a JSON log line with the given msg and returns it.
func (p *Process) WaitLog(ctx context.Context, msg string) (map[string]any, error) {
	var found map[string]any
	err := p.WaitOutput(ctx, func(_ string, logs []map[string]any) bool {
		for _, l := range logs {
			if l["msg"] == msg {
				found = l
				return true
			}
		}
		return false
	})
	return found, err
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
}

// SignalGroup sends sig to the process and every child it started (the
// process leads its own group), e.g. make and the program it runs.
func (p *Process) SignalGroup(sig syscall.Signal) {
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Wait waits for the process to exit and returns its exit code (-1 when
// killed by a signal), or an error when ctx ends first.
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Stop sends SIGTERM and waits up to grace for the process to exit, so that
// it flushes its buffered log lines (LOG_FLUSH_INTERVAL); t fails when it
// does not exit in time. It does nothing when the process has exited.
func (p *Process) Stop(t testing.TB, grace time.Duration) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	p.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if _, err := p.Wait(ctx); err != nil {
		t.Errorf("the process did not exit within %s of SIGTERM", grace)
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Service is a running ensure-user binary.
type Service struct {
	*Process
	URL string // http://127.0.0.1:port
}

// StartService runs the ensure-user binary with env (HTTP_ADDR defaults to a
// free loopback port) and waits until it listens.
func StartService(t testing.TB, env map[string]string, args ...string) *Service {
	t.Helper()
	bin := BuildBinary(t, "./cmd/ensure-user")
	e := map[string]string{"HTTP_ADDR": "127.0.0.1:0", "SHUTDOWN_DELAY": "0s", "LOG_LEVEL": "info"}
	for k, v := range env {
		e[k] = v
	}
	p := Start(t, bin, e, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := p.WaitLog(ctx, "listening")
	if err != nil {
		t.Fatalf("ensure-user did not start: %v\n%s", err, p.Output())
	}
	addr, _ := l["addr"].(string)
	return &Service{Process: p, URL: "http://" + addr}
}

// WaitReady polls /readyz until it answers 200 or ctx ends. Polling is the
// only way to observe readiness from outside the process.
func (s *Service) WaitReady(ctx context.Context) error {
	return WaitHTTP(ctx, s.URL+"/readyz", http.StatusOK)
}

// WaitHTTP polls url every 20 ms until it answers status or ctx ends.
func WaitHTTP(ctx context.Context, url string, status int) error {
	return proc.WaitHTTP(ctx, url, status)
}
