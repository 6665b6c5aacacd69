package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Target thresholds the report checks (docs/performance.md explains them).
// The CPU targets are ratios to the floor scenario of the same concurrency,
// measured in the same slices when interleaved (the default) or else in the
// same run, which holds still while this shared machine's speed drifts; the
// ratio to the raw ES256 check is reported for information only.
const (
	maxC64OverFloor    = 1.15 // target 1: c64 service CPU per request over the floor's
	maxC16OverFloor    = 1.2  // target 2: c16 over floor-c16
	maxSlowRSSMB       = 160  // target 4: peak RSS of the slow scenario, without GOMEMLIMIT
	maxXreadPerRequest = 0.25 // Redis work per request, at concurrency 64
)

// report is everything one invocation measured.
type report struct {
	Command      string        `json:"command"`
	Service      string        `json:"service"` // what was measured: the build, or -service-bin
	Started      time.Time     `json:"started"`
	Finished     time.Time     `json:"finished"`
	CPU          string        `json:"cpu_model"`
	Cores        int           `json:"cores"`
	GoVersion    string        `json:"go_version"`
	Pinned       bool          `json:"pinned"`
	ServiceCPUs  string        `json:"service_cpus,omitempty"`
	HelperCPUs   string        `json:"helper_cpus,omitempty"`
	Duration     string        `json:"duration"`
	Runs         int           `json:"runs"`
	Interleave   bool          `json:"interleave"` // -interleave: service scenarios and their floors in alternating slices
	NoFile       uint64        `json:"rlimit_nofile"`
	LoadStart    string        `json:"loadavg_start"`
	LoadEnd      string        `json:"loadavg_end"`
	Calibrations []calibration `json:"raw_es256"`
	Results      []*result     `json:"results"`
	Scenarios    []scenario    `json:"-"`
}

// line is a one-line account of one run.
func (r *result) line() string {
	if r.Skipped != "" {
		return fmt.Sprintf("%-16s skipped: %s", r.Scenario, r.Skipped)
	}
	ok := "ok"
	if !r.correct() {
		ok = fmt.Sprintf("INCORRECT %v %v", r.Outcomes, r.Problems)
	}
	pair := ""
	if p := r.Pair; p != nil {
		pair = fmt.Sprintf("  %.2f CPUs busy", p.Busy)
		if p.Ratio > 0 && len(p.SliceRatios) > 0 {
			pair += fmt.Sprintf("  ÷ %s %.3f× in the same %d slices (slice pairs: median %.3f)", p.Partner, p.Ratio, len(p.Slices), median(p.SliceRatios))
		}
	}
	return fmt.Sprintf("%-16s %7d req %8.0f req/s  p50 %7.2f  p99 %8.2f ms  cpu %6.1f µs/req = %.2f× raw %.1f  rss %5.1f MB  xadd %.3f xread %.3f /req  %s%s",
		r.Scenario, r.Requests, r.RPS, r.P50, r.P99, r.ServiceCPU, r.ServiceCPU/r.RawES256, r.RawES256, r.PeakRSSMB, r.XaddPerRequest, r.XreadPerRequest, ok, pair)
}

// agg is the median of a scenario's runs.
type agg struct {
	name    string
	sc      scenario
	runs    []*result
	skipped string
	correct bool
	m       map[string]float64
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (rep *report) aggregate() []agg {
	var out []agg
	for _, sc := range rep.Scenarios {
		a := agg{name: sc.Name, sc: sc, correct: true, m: map[string]float64{}}
		cols := map[string][]float64{}
		for _, r := range rep.Results {
			if r.Scenario != sc.Name {
				continue
			}
			a.runs = append(a.runs, r)
			a.correct = a.correct && r.correct()
			if r.Skipped != "" {
				a.skipped = r.Skipped
				continue
			}
			others := 0.0
			for _, v := range r.OtherServiceCmds {
				others += float64(v)
			}
			for k, v := range map[string]float64{
				"rps": r.RPS, "p50": r.P50, "p90": r.P90, "p99": r.P99, "p999": r.P999,
				"cpu": r.ServiceCPU, "user": r.ServiceUser, "sys": r.ServiceSys, "ratio": r.ServiceCPU / r.RawES256,
				"rss": r.PeakRSSMB, "gor": float64(r.PeakGoroutines), "waiting": float64(r.PeakWaiting),
				"xadd": r.XaddPerRequest, "xread": r.XreadPerRequest, "other": others / float64(max(1, r.Requests)),
				"redis": r.RedisCPU, "engine": r.EngineCPU, "tool": r.ToolCPU, "requests": float64(r.Requests),
				"svcxadd": float64(r.ServiceXadd), "heap": r.PeakHeapMB, "stack": r.PeakStackMB, "parked": float64(r.PeakParked),
				"idle": r.IdleRSSMB,
			} {
				cols[k] = append(cols[k], v)
			}
		}
		for k, v := range cols {
			a.m[k] = median(v)
		}
		out = append(out, a)
	}
	return out
}

// sameRun applies f to each pair of runs of a and b from the same
// repetition (interleaved in the same slices when a and b form a pair and
// -interleave is on, else b right after a, so both see the machine in much
// the same state) and returns the values in run order;
// pairs where f is not defined (NaN) are left out.
func sameRun(a, b *agg, f func(x, y *result) float64) []float64 {
	var out []float64
	for _, x := range a.runs {
		for _, y := range b.runs {
			if x.Rep != y.Rep || x.Skipped != "" || y.Skipped != "" {
				continue
			}
			if v := f(x, y); !math.IsNaN(v) {
				out = append(out, v)
			}
		}
	}
	return out
}

// cpuOver is x's service CPU per request over y's, NaN when y has none.
func cpuOver(x, y *result) float64 {
	if y.ServiceCPU <= 0 {
		return math.NaN()
	}
	return x.ServiceCPU / y.ServiceCPU
}

// cpuAbove is the service CPU per request x spends above y, in µs.
func cpuAbove(x, y *result) float64 { return x.ServiceCPU - y.ServiceCPU }

// perRun renders the runs' values, for a ratio given as their median; empty
// for a single run.
func perRun(xs []float64, format string) string {
	if len(xs) < 2 {
		return ""
	}
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf(format, x))
	}
	return "; runs " + strings.Join(parts, ", ")
}

// comparison is how the runs of a service scenario were compared with
// those of its floor, in the words of the target lines.
type comparison struct {
	where  string // "in the same slices" or "of the same run", after "the floor"
	short  string // "same slices" or "same run"
	how    string // interleaved: how, to open the parenthesis after the ratio
	spread string // interleaved: the slice pairs' ratios, to close it
}

// basis says how the runs of the service scenario a were compared with
// those of its floor f: in the same slices when every run of a was
// interleaved with f, else in the same run (one after the other). The
// spread pools the slice pairs' ratios of every run.
func basis(a, f *agg) comparison {
	var pooled []float64
	n, length := 0, 0.0
	for _, r := range a.runs {
		if r.Skipped != "" {
			continue
		}
		if r.Pair == nil || r.Pair.Partner != f.name {
			return comparison{where: "of the same run", short: "same run"}
		}
		pooled = append(pooled, r.Pair.SliceRatios...)
		n, length = len(r.Pair.Slices), r.Pair.SliceSeconds
	}
	c := comparison{where: "in the same slices", short: "same slices",
		how: fmt.Sprintf("interleaved: %d slices of %s each, alternating; Σ CPU ÷ Σ requests of each; ", n, time.Duration(length*float64(time.Second)).Round(time.Millisecond))}
	if len(pooled) > 0 {
		lo, mid, hi := quartiles(pooled)
		c.spread = fmt.Sprintf("; the slice pairs' own ratios: median %.2f, quartiles %.2f–%.2f, of %d", mid, lo, hi, len(pooled))
	}
	return c
}

// quartiles returns the lower quartile, the median and the upper quartile
// of xs (not empty), interpolating between ranks.
func quartiles(xs []float64) (lo, mid, hi float64) {
	s := slices.Clone(xs)
	slices.Sort(s)
	q := func(p float64) float64 {
		x := p * float64(len(s)-1)
		i := int(x)
		if i+1 >= len(s) {
			return s[len(s)-1]
		}
		return s[i] + (x-float64(i))*(s[i+1]-s[i])
	}
	return q(0.25), q(0.5), q(0.75)
}

// targets checks the load test's targets on the medians of the runs; each
// line says met or not met, and by how much. A missed target is reported,
// never failed: only wrong answers make the tool exit 1.
func (rep *report) targets(aggs []agg) []string {
	var out []string
	find := func(name string) *agg {
		for i := range aggs {
			if aggs[i].name == name && aggs[i].skipped == "" && len(aggs[i].runs) > 0 {
				return &aggs[i]
			}
		}
		return nil
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}

	// Target 1: c64 over the floor, in the same slices or the same run.
	if a := find("c64"); a != nil {
		if f := find(floorOf["c64"]); f != nil {
			over, above := sameRun(a, f, cpuOver), sameRun(a, f, cpuAbove)
			c := basis(a, f)
			out = append(out, fmt.Sprintf("1. Service CPU per confirmed request at c64 over the floor: %s — %.2f× the floor %s (%s≤ %.2f×; median of the runs' ratios%s%s): c64 %.1f µs (user %.1f + sys %.1f), floor %.1f µs, the service's own %.1f µs above the floor (%s); requests/s c64 %.0f, floor %.0f",
				verdict(median(over) <= maxC64OverFloor), median(over), c.where, c.how, maxC64OverFloor, perRun(over, "%.2f"), c.spread,
				a.m["cpu"], a.m["user"], a.m["sys"], f.m["cpu"], median(above), c.short, a.m["rps"], f.m["rps"]))
		} else {
			out = append(out, "1. Service CPU per confirmed request at c64 over the floor: not judged — the floor scenario did not run (-scenarios c64,floor)")
		}
	}

	// Target 2: c16 over floor-c16; c1 next to floor-c1, reported only.
	prefix := "2. "
	if a := find("c16"); a != nil {
		if f := find(floorOf["c16"]); f != nil {
			over, above := sameRun(a, f, cpuOver), sameRun(a, f, cpuAbove)
			c := basis(a, f)
			ref := ""
			if f64 := find(floorOf["c64"]); f64 != nil {
				ref = fmt.Sprintf("; for reference c16 ÷ floor (c64) = %.2f×", median(sameRun(a, f64, cpuOver)))
			}
			out = append(out, fmt.Sprintf("2. Service CPU per confirmed request at c16 over floor-c16: %s — %.2f× floor-c16 %s (%s≤ %.2f×; median of the runs' ratios%s%s): c16 %.1f µs, floor-c16 %.1f µs, the service's own %.1f µs above it (%s); requests/s c16 %.0f, floor-c16 %.0f%s",
				verdict(median(over) <= maxC16OverFloor), median(over), c.where, c.how, maxC16OverFloor, perRun(over, "%.2f"), c.spread,
				a.m["cpu"], f.m["cpu"], median(above), c.short, a.m["rps"], f.m["rps"], ref))
		} else {
			out = append(out, "2. Service CPU per confirmed request at c16 over floor-c16: not judged — floor-c16 did not run (-scenarios c16,floor-c16)")
		}
		prefix = "   "
	}
	if a := find("c1"); a != nil {
		if f := find(floorOf["c1"]); f != nil {
			over, above := sameRun(a, f, cpuOver), sameRun(a, f, cpuAbove)
			c := basis(a, f)
			p50 := sameRun(a, f, func(x, y *result) float64 {
				if y.P50 <= 0 {
					return math.NaN()
				}
				return x.P50 / y.P50
			})
			how := c.how
			if how != "" {
				how = c.where + ", " + how
			}
			out = append(out, fmt.Sprintf("%sc1 next to floor-c1 (reported, no limit): CPU per request %.1f µs vs %.1f µs = %.2f× (%smedian of the runs' ratios%s%s), so the idle-wake path costs %.1f µs beyond the floor's; p50 %.3f ms vs %.3f ms = %.2f×; requests/s %.0f vs %.0f",
				prefix, a.m["cpu"], f.m["cpu"], median(over), how, perRun(over, "%.2f"), c.spread, median(above), a.m["p50"], f.m["p50"], median(p50), a.m["rps"], f.m["rps"]))
		} else {
			out = append(out, prefix+"c1 next to floor-c1: not reported — floor-c1 did not run (-scenarios c1,floor-c1)")
		}
	}

	// Target 4: memory of requests waiting on a slow Engine, no GOMEMLIMIT.
	if a := find("slow"); a != nil {
		v := verdict(a.correct && a.m["rss"] <= maxSlowRSSMB)
		limit := "no GOMEMLIMIT"
		if a.sc.MemLimit != "" {
			v = "not judged: the target is without GOMEMLIMIT (-slow-memlimit \"\", none in -service-env)"
			limit = "GOMEMLIMIT " + a.sc.MemLimit
		}
		var perWait []float64 // KB of RSS per waiting request, run by run
		for _, r := range a.runs {
			if r.PeakWaiting > 0 {
				perWait = append(perWait, (r.PeakRSSMB-r.IdleRSSMB)*1024/float64(r.PeakWaiting))
			}
		}
		out = append(out, fmt.Sprintf("4. %d requests waiting on a slow Engine, %s: %s — all confirmed: %v, peak waiting %.0f, service peak RSS %.1f MB (≤ %d MB), idle %.1f MB before the burst, so %.1f KB per waiting request ((peak − idle) ÷ peak waiting); sampled peaks: heap %.0f MB, goroutine stacks %.0f MB, parked connections %.0f; p99 %.0f ms",
			a.sc.Requests, limit, v, a.correct, a.m["waiting"], a.m["rss"], maxSlowRSSMB, a.m["idle"], median(perWait), a.m["heap"], a.m["stack"], a.m["parked"], a.m["p99"]))
	}

	// The checks kept from before: Redis work, coalescing, correctness.
	if a := find("c64"); a != nil {
		exact := true
		others := map[string]int64{}
		for _, r := range a.runs {
			exact = exact && r.ServiceXadd == r.Requests
			for k, v := range r.OtherServiceCmds {
				others[k] += v
			}
		}
		ok := exact && a.m["xread"] <= maxXreadPerRequest && len(others) == 0
		out = append(out, fmt.Sprintf("Redis work per request at c64: %s — XADD %.3f/req (exactly one per request: %v), XREAD %.3f/req (≤ %.2f), other commands on the hot path: %s",
			verdict(ok), a.m["xadd"], exact, a.m["xread"], maxXreadPerRequest, counts(others)))
	}
	if a := find("coalesce"); a != nil {
		ok := a.correct && a.m["svcxadd"] == 1
		out = append(out, fmt.Sprintf("Coalescing, %d requests for one user at once: %s — XADD on the request stream %.0f (want 1), all answered with the Engine's confirmation: %v",
			a.sc.Requests, verdict(ok), a.m["svcxadd"], a.correct))
	}
	var wrong []string
	for _, a := range aggs {
		if !a.correct {
			wrong = append(wrong, a.name)
		}
	}
	if len(wrong) == 0 {
		out = append(out, "Every answer correct: met — every request of every run was answered 200 with the confirmed body")
	} else {
		out = append(out, fmt.Sprintf("Every answer correct: NOT met — wrong answers in %s (the tool exits 1)", strings.Join(wrong, ", ")))
	}

	// For information: the ratio to the raw check, no longer a target.
	var raw []string
	for _, a := range aggs {
		if a.skipped == "" && len(a.runs) > 0 && a.sc.Kind == "closed" && a.sc.Instances <= 1 && a.sc.Durable == "" {
			raw = append(raw, fmt.Sprintf("%s %.2f×", a.name, a.m["ratio"]))
		}
	}
	if len(raw) > 0 {
		out = append(out, fmt.Sprintf("For information, no longer a target: service CPU per request over the raw ES256 check of the same run (median %.1f µs): %s",
			rep.medianRaw(), strings.Join(raw, ", ")))
	}
	return out
}

// medianRaw is the median of every run's raw ES256 check, in µs.
func (rep *report) medianRaw() float64 {
	var xs []float64
	for _, r := range rep.Results {
		if r.Skipped == "" {
			xs = append(xs, r.RawES256)
		}
	}
	return median(xs)
}

// write stores report.md, results.json and latency.png in dir.
func (rep *report) write(dir string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return err
	}
	if err := rep.plot(filepath.Join(dir, "latency.png")); err != nil {
		return fmt.Errorf("latency plot: %w", err)
	}
	var md strings.Builder
	rep.markdown(&md)
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(md.String()), 0o644)
}

func (rep *report) markdown(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	aggs := rep.aggregate()
	p("# ensure-user load test, %s", rep.Started.Format("2006-01-02 15:04:05 MST"))
	p("")
	p("- command: `%s`", rep.Command)
	p("- service: %s", rep.Service)
	p("- machine: %s, %d cores; %s", rep.CPU, rep.Cores, rep.GoVersion)
	if rep.Pinned {
		p("- pinning: **yes** — each ensure-user on CPU %s (`taskset -c %s`); load generator, redis-server and engine-sim on CPU %s", rep.ServiceCPUs, rep.ServiceCPUs, rep.HelperCPUs)
	} else {
		p("- pinning: **no** — every process shares every core")
	}
	p("- load average (1, 5, 15 min): %s at start, %s at end; per run in the details", rep.LoadStart, rep.LoadEnd)
	p("- %s per closed/open-loop run, %d run(s) of each scenario, each on fresh processes; figures are medians over the runs", rep.Duration, rep.Runs)
	if pairs := rep.interleavedPairs(); len(pairs) > 0 {
		p("- interleaved (`-interleave`): %s — each pair's two processes run side by side on the service CPU, both warmed up, and the load alternates between them in slices (service first in even slice pairs, floor first in odd ones), with a %s pause after each slice's last answer; each member's CPU is read at every switch and everything its own process spends over the pair's window, in its partner's slices too, is its own", strings.Join(pairs, ", "), settle)
	} else if !rep.Interleave {
		p("- not interleaved (`-interleave=false`): each floor runs after its service scenario")
	}
	p("- RLIMIT_NOFILE %d; duration %s", rep.NoFile, rep.Finished.Sub(rep.Started).Round(time.Second))
	var cal []string
	for _, c := range rep.Calibrations {
		cal = append(cal, fmt.Sprintf("%.1f", c.CPUMicros))
	}
	p("- raw ES256 signature check (SHA-256 + crypto/ecdsa.Verify) on the service CPU, CPU µs per check, measured before and after each scenario run or interleaved pair (the run's denominator is their mean): %s", strings.Join(cal, ", "))
	p("")
	p("CPU figures are per request, in µs of CPU time (utime+stime from /proc/<pid>/stat over the run, 10 ms resolution), for the service (all instances), and for information Redis, engine-sim and the load generator. Peak RSS is VmHWM of the largest instance. Redis commands are from INFO commandstats after CONFIG RESETSTAT; the service's XADDs are the request stream's entries-added (XINFO STREAM), the Engine's are the reply streams'.")
	p("")
	p("## Summary")
	p("")
	p("| scenario | requests | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | service CPU µs/req (user+sys) | × raw ES256 | peak RSS MB | peak goroutines | XADD/req | XREAD/req | other cmds/req | answers |")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, a := range aggs {
		if a.skipped != "" {
			p("| %s | – | – | – | – | – | – | – | – | – | – | – | – | – | skipped: %s |", a.name, a.skipped)
			continue
		}
		ans := "all confirmed"
		if !a.correct {
			ans = "**INCORRECT**"
		}
		p("| %s | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %.1f (%.1f+%.1f) | %.2f | %.1f | %.0f | %.3f | %.3f | %.3f | %s |",
			a.name, a.m["requests"], a.m["rps"], a.m["p50"], a.m["p90"], a.m["p99"], a.m["p999"], a.m["cpu"], a.m["user"], a.m["sys"],
			a.m["ratio"], a.m["rss"], a.m["gor"], a.m["xadd"], a.m["xread"], a.m["other"], ans)
	}
	p("")
	p("![latency by percentile](latency.png)")
	p("")
	p("## Targets")
	p("")
	p("The CPU targets are judged on the median of the runs' ratios: each service scenario over the floor scenario of its concurrency (`tools/cmd/loadtest/floor`: Echo on net/http answering after only the raw ES256 check). Interleaved (the default), a run's ratio is Σ CPU ÷ Σ requests of the service over the same of the floor, over the same alternating slices, and the slice pairs' own ratios show the spread; with `-interleave=false` it compares the floor run right after the service scenario. A missed target is reported here; only wrong answers make the tool exit 1.")
	p("")
	for _, t := range rep.targets(aggs) {
		p("- %s", t)
	}
	p("")
	p("## Scenarios")
	for _, a := range aggs {
		p("")
		p("### %s — %s", a.name, a.sc.Description)
		p("")
		p("| run | requests | s | req/s | p50 | p90 | p99 | p99.9 | max ms | service CPU µs/req | redis | engine | loadgen | peak RSS MB | heap / stacks MB | goroutines | waiting | XADD/req | XREAD/req | load before → after |")
		p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, r := range a.runs {
			if r.Skipped != "" {
				p("| %d | skipped: %s |||||||||||||||||||", r.Rep, r.Skipped)
				continue
			}
			p("| %d | %d | %.1f | %.0f | %.2f | %.2f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f / %.0f | %d | %d | %.3f | %.3f | %s → %s |",
				r.Rep, r.Requests, r.Seconds, r.RPS, r.P50, r.P90, r.P99, r.P999, r.Max, r.ServiceCPU, r.RedisCPU, r.EngineCPU, r.ToolCPU,
				r.PeakRSSMB, r.PeakHeapMB, r.PeakStackMB, r.PeakGoroutines, r.PeakWaiting, r.XaddPerRequest, r.XreadPerRequest, r.LoadBefore, r.LoadAfter)
		}
		for _, r := range a.runs {
			if r.Skipped != "" {
				continue
			}
			p("")
			p("Run %d: status %s; outcomes %s.", r.Rep, counts(r.Status), counts(r.Outcomes))
			if len(r.Problems) > 0 {
				p("Problems: `%s`", strings.Join(r.Problems, "`, `"))
			}
			for _, n := range r.Notes {
				p("Note: %s.", n)
			}
			if pr := r.Pair; pr != nil {
				p("%s", pr.describe(r))
			}
			p("Redis commands: %s.", cmdTable(r))
			if len(r.BackgroundCmds) > 0 {
				p("Of these, time-driven background commands of the service (not per request): %s.", counts(r.BackgroundCmds))
			}
		}
	}
}

// interleavedPairs names the pairs measured interleaved, "c64 with floor".
func (rep *report) interleavedPairs() []string {
	var out []string
	for _, r := range rep.Results {
		if r.Pair != nil && r.Pair.Ratio > 0 && r.Rep == 1 {
			out = append(out, r.Scenario+" with "+r.Pair.Partner)
		}
	}
	return out
}

// describe is the report's account of how run r was interleaved.
func (p *pairing) describe(r *result) string {
	var b strings.Builder
	first := 0
	for _, f := range p.Slices {
		if f.First {
			first++
		}
	}
	fmt.Fprintf(&b, "Interleaved with %s: %d slices of %.2f s each (first in %d of the slice pairs), %.1f s of load in a window of %.1f s; CPU %.1f µs per request = %.1f in its own slices + %.1f while %s ran; its process kept %.2f CPUs busy in its slices (CPU time ÷ time under load; 1.00 is one core saturated).",
		p.Partner, len(p.Slices), p.SliceSeconds, first, r.Seconds, p.WindowSeconds, r.ServiceCPU, p.OwnCPU, p.PartnerCPU, p.Partner, p.Busy)
	if p.Ratio > 0 {
		var parts []string
		for _, x := range p.SliceRatios {
			parts = append(parts, fmt.Sprintf("%.2f", x))
		}
		fmt.Fprintf(&b, " Over %s: %.3f× (Σ CPU ÷ Σ requests of each)", p.Partner, p.Ratio)
		if len(parts) > 0 {
			fmt.Fprintf(&b, "; slice pair by slice pair: %s (median %.3f)", strings.Join(parts, ", "), median(p.SliceRatios))
		}
		b.WriteString(".")
	}
	var reqs []string
	for _, f := range p.Slices {
		reqs = append(reqs, fmt.Sprintf("%d/%.0f+%.0f", f.Requests, f.OwnCPU, f.PartnerCPU))
	}
	fmt.Fprintf(&b, " Requests / CPU ms in its slice + in the partner's, by slice pair: %s.", strings.Join(reqs, ", "))
	return b.String()
}

// counts renders a map of counts as "k: v, ..." in key order.
func counts(m map[string]int64) string {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// cmdTable renders the commandstats of a run with their attribution.
func cmdTable(r *result) string {
	type row struct {
		name  string
		calls int64
	}
	var rows []row
	for k, v := range r.Commands {
		rows = append(rows, row{k, v})
	}
	sort.Slice(rows, func(i, j int) bool {
		return rows[i].calls > rows[j].calls || (rows[i].calls == rows[j].calls && rows[i].name < rows[j].name)
	})
	n := float64(max(1, r.Requests))
	var parts []string
	for _, x := range rows {
		who := sender(x.name)
		if x.name == "xadd" {
			who = fmt.Sprintf("service %d + engine %d", r.ServiceXadd, r.EngineXadd)
		}
		parts = append(parts, fmt.Sprintf("%s %d (%.3f/req, %s)", x.name, x.calls, float64(x.calls)/n, who))
	}
	return strings.Join(parts, "; ")
}

// summary prints the one-screen summary.
func (rep *report) summary(w io.Writer, dir string) {
	aggs := rep.aggregate()
	pin := "not pinned"
	if rep.Pinned {
		pin = fmt.Sprintf("service pinned to CPU %s, the rest to CPU %s", rep.ServiceCPUs, rep.HelperCPUs)
	}
	fmt.Fprintf(w, "\n%s, %d cores, %s; load average %s → %s; medians of %d run(s)\n", rep.CPU, rep.Cores, pin, rep.LoadStart, rep.LoadEnd, rep.Runs)
	fmt.Fprintf(w, "%-16s %8s %8s %8s %8s %9s %8s %7s %7s %6s %6s %s\n", "scenario", "req/s", "p50 ms", "p99 ms", "p99.9", "cpu µs/r", "×raw", "rss MB", "gorout", "xadd", "xread", "answers")
	for _, a := range aggs {
		if a.skipped != "" {
			fmt.Fprintf(w, "%-16s skipped: %s\n", a.name, a.skipped)
			continue
		}
		ans := "ok"
		if !a.correct {
			ans = "INCORRECT"
		}
		fmt.Fprintf(w, "%-16s %8.0f %8.2f %8.2f %8.2f %9.1f %8.2f %7.1f %7.0f %6.3f %6.3f %s\n",
			a.name, a.m["rps"], a.m["p50"], a.m["p99"], a.m["p999"], a.m["cpu"], a.m["ratio"], a.m["rss"], a.m["gor"], a.m["xadd"], a.m["xread"], ans)
	}
	for _, t := range rep.targets(aggs) {
		fmt.Fprintln(w, t)
	}
	fmt.Fprintf(w, "report: %s\n", filepath.Join(dir, "report.md"))
}

// plot draws latency against percentile, one line per scenario (its runs
// pooled), both axes logarithmic in the tail.
func (rep *report) plot(path string) error {
	p := plot.New()
	p.Title.Text = "ensure-user latency by percentile"
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	// x = -log10(1-q): 50% at 0.3, 90% at 1, 99% at 2, 99.9% at 3.
	p.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{
		{Value: 0, Label: "0%"}, {Value: math.Log10(2), Label: "50%"}, {Value: 1, Label: "90%"},
		{Value: 2, Label: "99%"}, {Value: 3, Label: "99.9%"}, {Value: 4, Label: "99.99%"},
	})
	p.Legend.Top = true
	p.Legend.Left = true
	i := 0
	for _, sc := range rep.Scenarios {
		var lat []time.Duration
		for _, r := range rep.Results {
			if r.Scenario == sc.Name {
				lat = append(lat, r.lat...)
			}
		}
		if len(lat) == 0 {
			continue
		}
		slices.Sort(lat)
		n := len(lat)
		var pts plotter.XYs
		maxX := math.Log10(float64(n))
		for k := 0; k <= 400; k++ {
			x := maxX * float64(k) / 400
			q := 1 - math.Pow(10, -x)
			j := min(n-1, int(q*float64(n)))
			pts = append(pts, plotter.XY{X: x, Y: math.Max(0.01, float64(lat[j])/float64(time.Millisecond))})
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i / 7)
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(sc.Name, line)
		i++
	}
	return p.Save(9*vg.Inch, 5.5*vg.Inch, path)
}
