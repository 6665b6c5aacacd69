package proc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseSeries(t *testing.T) {
	t.Parallel()
	const exposition = `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
go_goroutines_total_not_this 7
ensure_user_outcomes_total{outcome="busy"} 3
ensure_user_outcomes_total{outcome="confirmed"} 1.5e+06
`
	tests := []struct {
		series string
		want   float64
		found  bool
	}{
		{"go_goroutines", 42, true},
		{`ensure_user_outcomes_total{outcome="busy"}`, 3, true},
		{`ensure_user_outcomes_total{outcome="confirmed"}`, 1.5e6, true},
		{"ensure_user_outcomes_total", 0, false}, // labels are part of the series
		{"absent", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.series, func(t *testing.T) {
			t.Parallel()
			m, err := ParseSeries(strings.NewReader(exposition), tt.series)
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := m[tt.series]; v != tt.want || ok != tt.found {
				t.Errorf("ParseSeries(%s) = %v, %v; want %v, %v", tt.series, v, ok, tt.want, tt.found)
			}
		})
	}
	if _, err := ParseSeries(strings.NewReader("x not-a-number\n"), "x"); err == nil {
		t.Error("a value that is not a number parsed")
	}
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	n := 0
	if err := WaitFor(context.Background(), 5*time.Second, func() bool { n++; return n == 3 }, nil); err != nil {
		t.Errorf("a condition that comes true: %v", err)
	}
	if err := WaitFor(context.Background(), 30*time.Millisecond, func() bool { return false }, nil); err == nil {
		t.Error("a condition that never holds did not time out")
	}
	exited := make(chan struct{})
	close(exited)
	if err := WaitFor(context.Background(), 5*time.Second, func() bool { return false }, exited); err == nil {
		t.Error("a dead process did not end the wait")
	}
}

// TestChild runs a shell that logs a JSON line and waits: WaitLog finds the
// line, Stop ends it with the signal, and the log file holds the output.
func TestChild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := filepath.Join(dir, "sh.log")
	c, err := Start("sh", "/bin/sh", log, []string{"PATH=" + os.Getenv("PATH")}, "-c", `echo '{"msg":"ready","n":1}'; exec sleep 60`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	line, err := c.WaitLog(ctx, "ready")
	if err != nil || line["n"] != float64(1) {
		t.Fatalf("WaitLog = %v, %v", line, err)
	}
	if !c.Running() {
		t.Fatal("the child is not running")
	}
	if err := c.Stop(syscall.SIGTERM, 5*time.Second); err == nil || c.Running() {
		t.Errorf("Stop = %v, running %v; want the signal's exit error and no process", err, c.Running())
	}
	if b, _ := os.ReadFile(log); !strings.Contains(string(b), `"msg":"ready"`) || !strings.Contains(c.Tail(100), "ready") {
		t.Errorf("log file holds %q", b)
	}
	var nilChild *Child
	if err := nilChild.Stop(syscall.SIGTERM, time.Second); err != nil {
		t.Errorf("Stop of a nil Child = %v", err)
	}
}
