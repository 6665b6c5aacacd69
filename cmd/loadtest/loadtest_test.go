package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ensure-user/ensure-user/test/testenv"
)

// needRedis skips without redis-server, unless CI demands a real one.
func needRedis(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv(testenv.RequireRealRedisEnv) == "1" {
			t.Fatalf("redis-server not found and %s=1: %v", testenv.RequireRealRedisEnv, err)
		}
		t.Skipf("the load test needs redis-server: %v", err)
	}
}

// TestQuick runs the -quick smoke run end to end and checks that the tool's
// output is complete and consistent. It asserts correctness, never
// performance: the figures depend on the machine.
func TestQuick(t *testing.T) {
	needRedis(t)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout bytes.Buffer
	// Unpinned: pinning would pin the test binary itself.
	if err := run(ctx, []string{"-quick", "-pin=false", "-out", out}, &stdout); err != nil {
		t.Fatalf("loadtest -quick: %v\n%s", err, stdout.String())
	}
	dirs, _ := filepath.Glob(filepath.Join(out, "*"))
	if len(dirs) != 1 {
		t.Fatalf("want one results directory under %s, got %v", out, dirs)
	}
	dir := dirs[0]

	var rep struct {
		Pinned  bool `json:"pinned"`
		Results []struct {
			Scenario    string           `json:"scenario"`
			Requests    int64            `json:"requests"`
			Confirmed   int64            `json:"confirmed"`
			Status      map[string]int64 `json:"status"`
			ServiceXadd int64            `json:"service_xadd"`
			ServiceCPU  float64          `json:"service_cpu_us"`
			PeakRSSMB   float64          `json:"service_peak_rss_mb"`
			Goroutines  int64            `json:"service_peak_goroutines"`
			Commands    map[string]int64 `json:"redis_commands"`
		} `json:"results"`
		Raw []struct {
			CPU float64 `json:"cpu_us"`
		} `json:"raw_es256"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if rep.Pinned || len(rep.Raw) != 2*len(rep.Results) {
		t.Errorf("pinned %v, %d calibrations for %d results: want unpinned and two per result", rep.Pinned, len(rep.Raw), len(rep.Results))
	}
	for _, c := range rep.Raw {
		if c.CPU <= 0 {
			t.Errorf("calibration %+v: want a positive CPU time", c)
		}
	}
	want := []string{"c1", "c64", "floor", "open", "slow", "coalesce"}
	if len(rep.Results) != len(want) {
		t.Fatalf("got %d results, want %d (%v)", len(rep.Results), len(want), want)
	}
	for i, r := range rep.Results {
		if r.Scenario != want[i] {
			t.Errorf("result %d is %q, want %q", i, r.Scenario, want[i])
		}
		if r.Requests == 0 || r.Confirmed != r.Requests || r.Status["200"] != r.Requests {
			t.Errorf("%s: %d requests, %d confirmed, status %v: want every answer confirmed", r.Scenario, r.Requests, r.Confirmed, r.Status)
		}
		if r.ServiceCPU <= 0 || r.PeakRSSMB <= 0 || (r.Goroutines <= 0 && r.Scenario != "floor") {
			t.Errorf("%s: CPU %.1f µs/req, RSS %.1f MB, goroutines %d: want all measured", r.Scenario, r.ServiceCPU, r.PeakRSSMB, r.Goroutines)
		}
		switch r.Scenario {
		case "floor":
			// The HTTP stack alone: no Redis at all.
			if r.ServiceXadd != 0 || len(r.Commands) != 0 {
				t.Errorf("floor: %d XADDs, commands %v: want none", r.ServiceXadd, r.Commands)
			}
			continue
		case "coalesce":
			// 100 requests for one user while the Engine holds the reply:
			// one command.
			if r.ServiceXadd != 1 {
				t.Errorf("coalesce: %d XADDs on the request stream, want 1", r.ServiceXadd)
			}
		default:
			if r.ServiceXadd != r.Requests {
				t.Errorf("%s: %d XADDs for %d requests, want one each", r.Scenario, r.ServiceXadd, r.Requests)
			}
		}
		if r.Commands["xread"] == 0 {
			t.Errorf("%s: no XREAD counted: %v", r.Scenario, r.Commands)
		}
	}

	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append([]string{"## Summary", "## Targets", "latency.png", "pinning: **no**"}, want...) {
		if !bytes.Contains(md, []byte(s)) {
			t.Errorf("report.md lacks %q", s)
		}
	}
	f, err := os.Open(filepath.Join(dir, "latency.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("latency.png: %v", err)
	}
	if img.Bounds().Dx() < 100 {
		t.Errorf("latency.png is %v", img.Bounds())
	}
	if !strings.Contains(stdout.String(), "report: "+filepath.Join(dir, "report.md")) {
		t.Errorf("the summary does not name the report:\n%s", stdout.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "logs")); !os.IsNotExist(err) {
		t.Errorf("logs were kept without -keep-logs: %v", err)
	}
}

// TestWrongAnswersFail proves the tool fails when an answer is not the
// confirmed one: here the Engine answers every command with status error.
func TestWrongAnswersFail(t *testing.T) {
	needRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout bytes.Buffer
	err := run(ctx, []string{"-quick", "-pin=false", "-scenarios", "c1", "-duration", "200ms",
		"-engine-env", "ENGINE_ERROR_RATIO=1", "-out", t.TempDir()}, &stdout)
	if !errors.Is(err, errIncorrect) {
		t.Fatalf("got %v, want the correctness failure\n%s", err, stdout.String())
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-scenarios", "c1,nope"},
		{"-scenarios", ""},
		{"-runs", "0"},
		{"extra"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
	o, err := parseFlags([]string{"-quick", "-duration", "3s"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 3*time.Second || len(o.scenarios) != 6 || o.slowRequests != 300 {
		t.Errorf("-quick with -duration: %+v", o)
	}
}
