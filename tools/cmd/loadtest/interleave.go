package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"
)

// Interleaved pairs (-interleave, on by default). The CPU targets are
// ratios of a service scenario to its floor (c1 to floor-c1, c16 to
// floor-c16, c64 to floor), and this shared VM's speed drifts by up to 40 %
// within minutes: run one after the other, tens of seconds apart, the two
// members of a pair see different machines, and three runs of one binary
// gave c64 ÷ floor = 1.68, 1.50, 1.30. Interleaved, both members' processes
// run side by side on the service CPU, both are warmed up, and the load
// alternates between them in short slices, so that every stretch of the
// drift is seen by both.

// defaultSlice is the length of one slice of an interleaved pair. CPU time
// comes from /proc in 10 ms ticks. A saturated service uses about 100 ticks
// in a 1 s slice, so one slice's reading is within ±1 % (a slice pair's
// ratio within about ±1.5 %, ±3 % at c1, which keeps the CPU about half
// busy), while the pair's Σ ratio carries only the truncation at the two
// ends of the whole interleaved window, as the readings in between
// telescope: ±10 ms of some 10 s, 0.1 %. Much longer slices would let the
// machine drift between a slice and its partner's again; much shorter ones
// would drown the per-slice ratios, which show the spread, in the ticks.
const defaultSlice = time.Second

// settle is the pause after a slice's last answer, before its closing CPU
// reading and the switch to the partner. The load is a closed loop, so when
// a slice ends no request of it is in flight; the pause lets the work it
// leaves behind - the service's buffered request lines, written every
// LOG_FLUSH_INTERVAL (100 ms by default), a GC cycle under way - run in the
// slice it belongs to and not beside the partner's load. Whatever runs later
// is counted all the same: every process's CPU is read at every switch, and
// what a member spends while its partner runs is counted as its own.
const settle = 100 * time.Millisecond

// pairing is how a result was measured as one member of an interleaved
// pair. The member's ServiceCPU is the CPU time of its own process over the
// whole interleaved window - its slices and its partner's - divided by the
// requests of its slices.
type pairing struct {
	Partner       string  `json:"partner"`
	SliceSeconds  float64 `json:"slice_s"`
	WindowSeconds float64 `json:"window_s"` // the whole interleaved load, both members, settle pauses included
	// Slices holds the member's figures for each slice pair, in order.
	Slices []sliceFigures `json:"slices"`
	// OwnCPU and PartnerCPU split ServiceCPU, in µs per request: spent
	// during the member's own slices, and while its partner's ran.
	OwnCPU     float64 `json:"own_slices_cpu_us"`
	PartnerCPU float64 `json:"partner_slices_cpu_us"`
	// Busy is the member's process's CPU time over its slices' time under
	// load: 1 is one core kept busy (more is possible only unpinned, with
	// GOMAXPROCS above 1). A closed loop of 64 or 16 workers keeps the
	// service's CPU busy unless something else holds it back - typically
	// the helper CPU, shared by the load generator, Redis and engine-sim
	// with whatever else runs on the machine - and the service's CPU per
	// request rises when it is not saturated (its Redis traffic batches
	// less), while the floor's does not: a low Busy marks a run whose ratio
	// says more about the machine than about the service.
	Busy float64 `json:"busy"`
	// Ratio (the service member only) is Σ CPU ÷ Σ requests of the member
	// over the same of its partner, both over the same slices.
	Ratio float64 `json:"ratio_to_partner,omitempty"`
	// SliceRatios (the service member only) is the same ratio for each
	// slice pair taken alone, to show the spread; pairs where it is not
	// defined (no request, no CPU tick) are left out.
	SliceRatios []float64 `json:"slice_pair_ratios,omitempty"`
}

// sliceFigures is one member's share of one slice pair.
type sliceFigures struct {
	First      bool    `json:"first"` // its slice ran first in the pair
	Requests   int64   `json:"requests"`
	Seconds    float64 `json:"s"`              // under load
	OwnCPU     float64 `json:"own_cpu_ms"`     // its process during its slice
	PartnerCPU float64 `json:"partner_cpu_ms"` // its process during the partner's slice of the pair
}

// cpu is the member's CPU time over the slice pair, in ms.
func (f sliceFigures) cpu() float64 { return f.OwnCPU + f.PartnerCPU }

// pairOf returns the two members of the interleaved pair that name belongs
// to: with -interleave, when name is a service scenario with a floor or such
// a floor, and both members are selected.
func (o options) pairOf(name string) (svc, floor string, ok bool) {
	if !o.interleave {
		return "", "", false
	}
	for s, f := range floorOf {
		if (name == s || name == f) && slices.Contains(o.scenarios, s) && slices.Contains(o.scenarios, f) {
			return s, f, true
		}
	}
	return "", "", false
}

// member is one side of an interleaved pair while it runs.
type member struct {
	sc        scenario
	e         *env
	res       *result
	client    *http.Client
	replyKeys []string
	before    snapshot
	next      int // the next of the tool's tokens to send
	tally     *tally
	elapsed   time.Duration // under load, over its slices
	exhausted bool
	slices    []sliceFigures
	toolCPU   time.Duration // the load generator's, during this member's slices
}

// runPair measures the service scenario svc and its floor fl interleaved:
// both started side by side (the service with its redis-server and
// engine-sim, as runScenario does), both warmed up, then -duration of load
// for each in slices of about -slice, alternating. Slice pair i runs the
// service first when i is even and the floor first when it is odd (S F F S
// S F ...), so that a drift steady over a few seconds favours neither. It
// returns the service's result, then the floor's.
func (t *tool) runPair(ctx context.Context, svc, fl scenario, rep int) ([2]*result, error) {
	var none [2]*result
	ms := [2]*member{{sc: svc}, {sc: fl}}
	for _, m := range ms {
		m.res = &result{Scenario: m.sc.Name, Rep: rep, LoadBefore: loadAvg()}
		dir, err := os.MkdirTemp(t.workDir, m.sc.Name+"-")
		if err != nil {
			return none, err
		}
		e, err := t.start(ctx, m.sc, dir)
		defer func() {
			e.stop()
			if !t.keepLogs {
				_ = os.RemoveAll(dir)
			}
		}()
		if err != nil {
			return none, fmt.Errorf("%s: start: %w", m.sc.Name, err)
		}
		m.e = e
		client, transport := clientFor(m.sc)
		defer transport.CloseIdleConnections()
		m.client = client
		if !m.sc.Floor {
			m.replyKeys = []string{replyStream}
		}
	}
	// Both warm-ups run once both processes are up, so that each member's
	// first slice finds its partner as it will find it in every other.
	for _, m := range ms {
		if err := t.warmUp(ctx, m.sc, rep, m.e, m.client); err != nil {
			return none, err
		}
	}
	for _, m := range ms {
		var err error
		if m.res.IdleRSSMB, err = largestMB(m.e, "VmRSS"); err != nil {
			return none, err
		}
		if m.e.rc != nil {
			if err := m.e.rc.resetStats(ctx); err != nil {
				return none, err
			}
		}
	}
	for _, m := range ms {
		var err error
		if m.before, err = t.snap(ctx, m.e, m.replyKeys); err != nil {
			return none, err
		}
	}

	n := max(1, int(math.Round(float64(t.duration)/float64(t.sliceLen))))
	length := t.duration / time.Duration(n)
	for _, m := range ms {
		m.tally = newTally()
		m.slices = make([]sliceFigures, n)
	}
	prev := [2]cpuTimes{ms[0].before.services, ms[1].before.services}
	prevTool := ms[1].before.tool
	start := time.Now()
	for k := range 2 * n {
		if ctx.Err() != nil {
			return none, ctx.Err()
		}
		i := k / 2
		a := (k + i) % 2 // the member of this slice: S F F S S F ...
		m := ms[a]
		smp := startSampler(m.e, 500*time.Millisecond)
		lr := closedLoop(ctx, m.client, m.e.urls, m.sc.Concurrency, t.tokens[m.next:], length)
		smp.finish(m.res)
		if err := sleepCtx(ctx, settle); err != nil {
			return none, err
		}
		var cur [2]cpuTimes
		for j, x := range ms {
			var err error
			if cur[j], err = servicesCPU(x.e); err != nil {
				return none, fmt.Errorf("%s: %w", x.sc.Name, err)
			}
		}
		tool, err := procCPU("self")
		if err != nil {
			return none, err
		}

		m.next += lr.used
		m.exhausted = m.exhausted || lr.exhausted
		m.elapsed += lr.elapsed
		m.tally.merge(lr.tally)
		m.toolCPU += tool.sub(prevTool).total()
		m.slices[i].First = k%2 == 0
		m.slices[i].Requests = int64(len(lr.tally.lat))
		m.slices[i].Seconds = lr.elapsed.Seconds()
		m.slices[i].OwnCPU = millis(cur[a].sub(prev[a]).total())
		ms[1-a].slices[i].PartnerCPU = millis(cur[1-a].sub(prev[1-a]).total())
		prev, prevTool = cur, tool
	}
	window := time.Since(start)

	for j, m := range ms {
		after, err := t.snap(ctx, m.e, m.replyKeys)
		if err != nil {
			return none, err
		}
		// The member's CPU is that of the last switch, so that its figure
		// is exactly the sum of its slices'.
		after.services = prev[j]
		cmds := map[string]int64{}
		if m.e.rc != nil {
			if cmds, err = m.e.rc.commandStats(ctx); err != nil {
				return none, err
			}
		}
		if m.res.PeakRSSMB, err = largestMB(m.e, "VmHWM"); err != nil {
			return none, err
		}
		p := &pairing{Partner: ms[1-j].sc.Name, SliceSeconds: length.Seconds(), WindowSeconds: window.Seconds(), Slices: m.slices}
		m.res.Pair = p
		t.fill(m.res, m.sc, loadResult{tally: m.tally, elapsed: m.elapsed, exhausted: m.exhausted}, m.before, after, cmds)
		// The load generator drives both members: each is charged with
		// what it spent during that member's slices.
		reqs := float64(max(1, m.res.Requests))
		m.res.ToolCPU = float64(m.toolCPU) / float64(time.Microsecond) / reqs
		for _, f := range m.slices {
			p.OwnCPU += f.OwnCPU * 1e3 / reqs
			p.PartnerCPU += f.PartnerCPU * 1e3 / reqs
		}
		if m.elapsed > 0 {
			p.Busy = p.OwnCPU * reqs / 1e3 / millis(m.elapsed)
		}
		m.res.LoadAfter = loadAvg()
	}

	s, f := ms[0].res, ms[1].res
	if f.ServiceCPU > 0 {
		s.Pair.Ratio = s.ServiceCPU / f.ServiceCPU
	}
	for i := range n {
		x, y := ms[0].slices[i], ms[1].slices[i]
		if x.Requests == 0 || y.Requests == 0 || y.cpu() <= 0 {
			continue
		}
		s.Pair.SliceRatios = append(s.Pair.SliceRatios, (x.cpu()/float64(x.Requests))/(y.cpu()/float64(y.Requests)))
	}
	return [2]*result{s, f}, nil
}

// servicesCPU is the CPU time so far of e's service processes (the floor's
// process for a floor), and of nothing else.
func servicesCPU(e *env) (cpuTimes, error) {
	var sum cpuTimes
	for _, p := range e.services {
		c, err := procCPU(strconv.Itoa(p.Pid()))
		if err != nil {
			return cpuTimes{}, err
		}
		sum = sum.add(c)
	}
	return sum, nil
}

// millis is d in milliseconds.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sleepCtx waits for d, or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
