// Command loadtest is the whole-path load test of ensure-user (make
// loadtest). For each scenario it starts a fresh redis-server of its own on
// a free loopback port, engine-sim and the ensure-user binary (built by the
// tool, without the race detector), serves an ES256 JWKS itself, and drives
// HTTP load with pre-minted tokens of distinct users, each used once, so the
// service's token cache never hits. Every answer must be the confirmed one;
// anything else is a correctness failure and the tool exits 1.
//
// With -pin (the default on a machine with two or more cores) the service
// runs on -service-cpus and everything else (the load generator, Redis,
// engine-sim) on -helper-cpus, so the service's figures are per core.
//
// The report - requests/s, latency percentiles, answers, the service's CPU
// time per request (utime+stime from /proc), peak RSS, goroutines, and Redis
// commands per request from INFO commandstats - goes to
// results/<timestamp>/report.md with a latency plot (latency.png) and the
// raw figures (results.json); a summary is printed.
//
// The CPU targets are judged against the floor: the floor scenarios (floor,
// floor-c1, floor-c16) drive tools/cmd/loadtest/floor, Echo on net/http
// answering after only the raw ES256 check, with the workers of c64, c1 and
// c16, and the report gives the median of the runs' ratios. With -interleave
// (the default) a service scenario and its floor, when both are selected,
// are measured in the same run: both processes side by side on the service
// CPU, the load alternating between them in slices of -slice, so that the
// machine's drift, up to 40 % within minutes here, reaches both alike; the
// ratio is then Σ CPU ÷ Σ requests of the service over the floor's, over the
// same slices, and the median of the slice pairs' ratios shows the spread.
// -interleave=false runs them one after the other. A missed target is
// reported, not failed.
//
// It lives in the tools module (tools/go.mod), apart from the service's
// dependencies; the binaries it measures are built from the service module
// at the repository root. Usage, from the repository root:
//
//	make loadtest LOADTEST_FLAGS='[-quick] [-scenarios c64,slow] [-duration 10s] [-runs 3] ...'
//
// or, in tools/, go run ./cmd/loadtest with the same flags; -h lists them.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ensure-user/ensure-user/internal/proc"
)

// servicePkg is the service's main package, in the service module;
// floorPkg the floor scenario's server, in the tools module, which is the
// directory toolsDir of the service module.
const (
	servicePkg = "./cmd/ensure-user"
	floorPkg   = "./cmd/loadtest/floor"
	toolsDir   = "tools"
)

// errIncorrect marks a run in which some answer was not the confirmed one.
var errIncorrect = errors.New("correctness failure: some answers were not the confirmed one")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "loadtest:", err)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	os.Exit(1)
}

// allScenarios lists the scenario names in the order they run: each floor
// right after the service scenario of its concurrency, so that with
// -interleave=false the two see the machine in much the same state (with
// -interleave, the default, the two run as one interleaved pair). "floor" is the 64-worker one (the name
// predates the others).
var allScenarios = []string{"c1", "floor-c1", "c16", "floor-c16", "c64", "floor", "c256", "open", "slow", "x3-shared", "x3-per-instance", "coalesce", "durable"}

// floorOf names the floor scenario of each closed-loop service scenario
// that has one: the same workers against tools/cmd/loadtest/floor.
var floorOf = map[string]string{"c1": "floor-c1", "c16": "floor-c16", "c64": "floor"}

// options are the command line.
type options struct {
	scenarios      []string
	duration       time.Duration
	runs           int
	rate           float64
	slowRequests   int
	slowDelay      time.Duration
	slowTimeout    time.Duration
	slowMemLimit   string
	coalesceN      int
	coalesceDelay  time.Duration
	instances      int
	maxRate        float64
	pin            bool
	serviceCPUs    string
	helperCPUs     string
	out            string
	keepLogs       bool
	quick          bool
	serviceEnv     kvFlag
	engineEnv      kvFlag
	serviceBin     string
	calibrateIters int
	interleave     bool          // measure each service scenario and its floor in alternating slices
	sliceLen       time.Duration // the length of one interleaved slice
}

// kvFlag collects repeated KEY=VALUE flags.
type kvFlag map[string]string

func (f kvFlag) String() string { return fmt.Sprint(map[string]string(f)) }
func (f kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	f[k] = v
	return nil
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{serviceEnv: kvFlag{}, engineEnv: kvFlag{}}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run: "+strings.Join(allScenarios, ", "))
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each closed- and open-loop run")
	fs.IntVar(&o.runs, "runs", 1, "repeat every scenario this many times (fresh processes each time); the report gives medians")
	fs.Float64Var(&o.rate, "rate", 1500, "requests/s of the open-loop scenario")
	fs.IntVar(&o.slowRequests, "slow-requests", 10000, "requests waiting at once in the slow scenario")
	fs.DurationVar(&o.slowDelay, "slow-delay", 2*time.Second, "ENGINE_REPLY_DELAY of the slow scenario")
	fs.DurationVar(&o.slowTimeout, "slow-reply-timeout", 10*time.Second, "the service's ENGINE_REPLY_TIMEOUT in the slow scenario (0: the service default, 5s); above the default so that a busy machine cannot turn the slow Engine into timeouts")
	fs.StringVar(&o.slowMemLimit, "slow-memlimit", "", "the service's GOMEMLIMIT in the slow scenario (empty, the default: unset, as the memory target is judged; e.g. 230MiB for a 256 MB container)")
	fs.IntVar(&o.coalesceN, "coalesce-requests", 100, "simultaneous requests for one user in the coalesce scenario")
	fs.DurationVar(&o.coalesceDelay, "coalesce-delay", 500*time.Millisecond, "ENGINE_REPLY_DELAY of the coalesce scenario, so that the requests overlap")
	fs.IntVar(&o.instances, "instances", 3, "service instances of the x3-* scenarios")
	fs.Float64Var(&o.maxRate, "max-rate", 20000, "requests/s the token pool is sized for (duration x max-rate distinct users)")
	canPin := runtime.NumCPU() >= 2
	if _, err := exec.LookPath("taskset"); err != nil {
		canPin = false
	}
	fs.BoolVar(&o.pin, "pin", canPin, "pin the service to -service-cpus and the rest to -helper-cpus (needs taskset and 2 cores)")
	fs.StringVar(&o.serviceCPUs, "service-cpus", "1", "CPU the service instances run on when pinned")
	fs.StringVar(&o.helperCPUs, "helper-cpus", "0", "CPU the load generator, Redis and engine-sim run on when pinned")
	fs.StringVar(&o.out, "out", "results", "directory under which results/<timestamp>/ is written")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "keep every process's log under <out>/<timestamp>/logs")
	fs.BoolVar(&o.quick, "quick", false, "a fast smoke run: short runs, small bursts, a few scenarios (the tool's own test runs it)")
	fs.Var(o.serviceEnv, "service-env", "extra KEY=VALUE for the service (repeatable), e.g. GOGC=200")
	fs.Var(o.engineEnv, "engine-env", "extra KEY=VALUE for engine-sim (repeatable)")
	fs.StringVar(&o.serviceBin, "service-bin", "", "a prebuilt ensure-user binary to measure instead of building ./cmd/ensure-user (for A/B experiments)")
	fs.IntVar(&o.calibrateIters, "calibrate", 3000, "iterations of the raw ES256 check measured on the service CPU")
	fs.BoolVar(&o.interleave, "interleave", true, "measure c1, c16 and c64 with their floors (floor-c1, floor-c16, floor), when both are selected, in one run: side by side, the load alternating between them in slices of -slice (false: one after the other)")
	fs.DurationVar(&o.sliceLen, "slice", defaultSlice, "length of one slice of an interleaved pair; each member gets -duration of load in about -duration/-slice slices")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("scenarios", func() { *scen = "c1,floor-c1,c64,floor,open,slow,coalesce" })
		def("duration", func() { o.duration = time.Second })
		def("rate", func() { o.rate = 200 })
		def("slow-requests", func() { o.slowRequests = 300 })
		def("slow-delay", func() { o.slowDelay = 500 * time.Millisecond })
		def("coalesce-delay", func() { o.coalesceDelay = 300 * time.Millisecond })
		def("max-rate", func() { o.maxRate = 15000 })
		def("calibrate", func() { o.calibrateIters = 300 })
		def("slice", func() { o.sliceLen = 250 * time.Millisecond })
	}
	for s := range strings.SplitSeq(*scen, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return o, fmt.Errorf("-scenarios: unknown scenario %q (want %s)", s, strings.Join(allScenarios, ", "))
		}
		o.scenarios = append(o.scenarios, s)
	}
	switch {
	case len(o.scenarios) == 0:
		return o, errors.New("-scenarios: none given")
	case o.duration <= 0 || o.runs <= 0 || o.rate <= 0 || o.slowRequests <= 0 || o.coalesceN <= 0 || o.instances <= 0 || o.maxRate <= 0 || o.sliceLen <= 0:
		return o, errors.New("-duration, -runs, -rate, -slow-requests, -coalesce-requests, -instances, -max-rate and -slice must be positive")
	}
	// The tool learns each process's address and readiness from its
	// start-up lines, written at info: a quieter level would leave it
	// waiting for a line that never comes.
	for flag, env := range map[string]kvFlag{"-service-env": o.serviceEnv, "-engine-env": o.engineEnv} {
		if v, ok := env["LOG_LEVEL"]; ok && !strings.EqualFold(v, "info") && !strings.EqualFold(v, "debug") {
			return o, fmt.Errorf("%s LOG_LEVEL=%s: the tool reads the start-up lines logged at info; use info or debug", flag, v)
		}
	}
	return o, nil
}

// build returns the scenarios o selects.
func (o options) build() []scenario {
	// -service-env is applied after the scenario's own variables, so its
	// GOMEMLIMIT, if any, is the one the slow scenario runs with.
	memLimit := o.slowMemLimit
	if v, ok := o.serviceEnv["GOMEMLIMIT"]; ok {
		memLimit = v
	}
	floor := func(name string, workers int) scenario {
		return scenario{Name: name, Kind: "closed", Concurrency: workers, Floor: true,
			Description: fmt.Sprintf("the HTTP stack's floor: Echo on net/http (tools/cmd/loadtest/floor) answering after only the raw ES256 check, %d worker(s)", workers)}
	}
	all := map[string]scenario{
		"c1":        {Name: "c1", Kind: "closed", Concurrency: 1, Description: "closed loop, 1 worker"},
		"floor-c1":  floor("floor-c1", 1),
		"c16":       {Name: "c16", Kind: "closed", Concurrency: 16, Description: "closed loop, 16 workers"},
		"floor-c16": floor("floor-c16", 16),
		"c64":       {Name: "c64", Kind: "closed", Concurrency: 64, Description: "closed loop, 64 workers"},
		"floor":     floor("floor", 64),
		"c256":      {Name: "c256", Kind: "closed", Concurrency: 256, Description: "closed loop, 256 workers"},
		"open":      {Name: "open", Kind: "open", Rate: o.rate, Description: fmt.Sprintf("open loop, %g requests/s", o.rate)},
		"slow": {Name: "slow", Kind: "burst", Requests: o.slowRequests, EngineDelay: o.slowDelay, ReplyTimeout: o.slowTimeout, MemLimit: memLimit,
			Description: fmt.Sprintf("%d requests at once, Engine replies after %s (ENGINE_REPLY_TIMEOUT %s, GOMEMLIMIT %s)", o.slowRequests, o.slowDelay, cmp.Or(o.slowTimeout, 5*time.Second), cmp.Or(memLimit, "unset"))},
		"x3-shared": {Name: "x3-shared", Kind: "closed", Concurrency: 64, Instances: o.instances, ReplyStream: replyStream,
			Description: fmt.Sprintf("%d instances, 64 workers, one shared reply stream", o.instances)},
		"x3-per-instance": {Name: "x3-per-instance", Kind: "closed", Concurrency: 64, Instances: o.instances, ReplyStream: perInstance,
			Description: fmt.Sprintf("%d instances, 64 workers, a reply stream per instance", o.instances)},
		"coalesce": {Name: "coalesce", Kind: "burst", Requests: o.coalesceN, Coalesce: true, EngineDelay: o.coalesceDelay,
			Description: fmt.Sprintf("ENGINE_COALESCE=true, %d requests for one user at once, Engine replies after %s", o.coalesceN, o.coalesceDelay)},
		"durable": {Name: "durable", Kind: "closed", Concurrency: 64, Durable: "replica",
			Description: "ENGINE_DURABLE_SEND=replica with a replica redis-server, 64 workers"},
	}
	var out []scenario
	for _, n := range o.scenarios {
		out = append(out, all[n])
	}
	return out
}

// tool is one invocation's shared state.
type tool struct {
	options
	idp        *idp
	bins       map[string]string
	tokens     []string // distinct users, each used once per run
	oneUser    []string // distinct tokens of one user
	workDir    string
	serviceCPU int // the CPU calibrations run on, -1 when not pinned
}

// run is the whole tool; it returns errIncorrect (wrapped) when an answer
// was not the confirmed one.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	t := &tool{options: o, serviceCPU: -1}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return fmt.Errorf("redis-server is needed on PATH (apt-get install redis-server): %w", err)
	}
	nofile, err := raiseNoFile()
	if err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	// The tool holds one client connection per waiting request, the service
	// one server connection: each process needs that many descriptors.
	if need := uint64(o.slowRequests + 1024); nofile < need && slices.Contains(o.scenarios, "slow") {
		return fmt.Errorf("RLIMIT_NOFILE is %d; the slow scenario needs about %d (ulimit -Hn)", nofile, need)
	}
	root, err := proc.ModuleRoot()
	if err != nil {
		return err
	}
	stamp := time.Now().Format("20060102-150405")
	outDir := filepath.Join(o.out, stamp)
	if !filepath.IsAbs(outDir) {
		outDir = filepath.Join(root, outDir)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	if t.workDir, err = workDirFor(outDir); err != nil {
		return err
	}
	if !o.keepLogs {
		defer os.RemoveAll(t.workDir)
	}

	scs := o.build()
	pkgs := []string{"./cmd/engine-sim"}
	if o.serviceBin == "" {
		pkgs = append(pkgs, servicePkg)
	}
	floor := slices.ContainsFunc(scs, func(sc scenario) bool { return sc.Floor })
	built := strings.Join(pkgs, " ")
	if floor {
		built += " " + toolsDir + "/" + strings.TrimPrefix(floorPkg, "./")
	}
	fmt.Fprintf(stdout, "loadtest: building %s ...\n", built)
	if t.bins, err = proc.Build(ctx, root, filepath.Join(outDir, "bin"), pkgs...); err != nil {
		return err
	}
	if floor {
		fb, err := proc.Build(ctx, filepath.Join(root, toolsDir), filepath.Join(outDir, "bin"), floorPkg)
		if err != nil {
			return err
		}
		t.bins[floorPkg] = fb[floorPkg]
	}
	if o.serviceBin != "" {
		if t.bins[servicePkg], err = filepath.Abs(o.serviceBin); err != nil {
			return err
		}
	}
	defer os.RemoveAll(filepath.Join(outDir, "bin"))
	if t.idp, err = startIDP(); err != nil {
		return err
	}
	defer t.idp.close()

	pool := 0
	for _, sc := range scs {
		switch sc.Kind {
		case "closed", "open":
			pool = max(pool, int(o.maxRate*o.duration.Seconds())+1)
		case "burst":
			pool = max(pool, sc.Requests)
		}
	}
	fmt.Fprintf(stdout, "loadtest: minting %d ES256 tokens ...\n", pool)
	if t.tokens, err = t.idp.mintUsers("lt-"+stamp, pool, 3*time.Hour); err != nil {
		return err
	}
	if t.oneUser, err = t.idp.mintOneUser("lt-one-"+stamp, o.coalesceN, 3*time.Hour); err != nil {
		return err
	}

	if o.pin {
		helper, err1 := strconv.Atoi(o.helperCPUs)
		svc, err2 := strconv.Atoi(o.serviceCPUs)
		if err1 != nil || err2 != nil {
			return errors.New("-service-cpus and -helper-cpus must each name one CPU when pinning")
		}
		if err := pinSelf(helper); err != nil {
			return fmt.Errorf("pin the load generator: %w", err)
		}
		runtime.GOMAXPROCS(1)
		t.serviceCPU = svc
	} else {
		t.serviceCPUs, t.helperCPUs = "", ""
	}

	rep := &report{
		Command: "make loadtest LOADTEST_FLAGS='" + strings.Join(args, " ") + "'", Started: time.Now(), CPU: cpuModel(),
		Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Pinned: o.pin, ServiceCPUs: o.serviceCPUs,
		HelperCPUs: o.helperCPUs, Duration: o.duration.String(), Runs: o.runs, NoFile: nofile, LoadStart: loadAvg(),
		Interleave: o.interleave,
	}
	rep.Service = "ensure-user built from " + gitDescribe(root) + " (go build -trimpath -tags " + proc.ProductionTags + ", CGO_ENABLED=0)"
	if o.serviceBin != "" {
		rep.Service = "prebuilt binary " + o.serviceBin + " (-service-bin)"
	}
	if len(args) == 0 {
		rep.Command = "make loadtest"
	}
	byName := map[string]scenario{}
	for _, sc := range scs {
		byName[sc.Name] = sc
	}
	incorrect := false
	for r := 1; r <= o.runs; r++ {
		fmt.Fprintf(stdout, "loadtest: run %d/%d\n", r, o.runs)
		measured := map[string]bool{} // the second member of a pair, run with the first
		for _, sc := range scs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if measured[sc.Name] {
				continue
			}
			// The raw check is measured just before and just after each
			// scenario or interleaved pair: this shared machine's speed
			// drifts by tens of per cent within minutes, so only a
			// measurement next to the run makes a fair denominator.
			before, err := t.calibrate()
			if err != nil {
				return err
			}
			var ress []*result
			if svc, fl, ok := o.pairOf(sc.Name); ok {
				pair, err := t.runPair(ctx, byName[svc], byName[fl], r)
				if err != nil {
					return err
				}
				ress = pair[:]
				measured[svc], measured[fl] = true, true
			} else {
				res, err := t.runScenario(ctx, sc, r)
				if err != nil {
					return err
				}
				ress = []*result{res}
			}
			after, err := t.calibrate()
			if err != nil {
				return err
			}
			rep.Calibrations = append(rep.Calibrations, before, after)
			for _, res := range ress {
				res.RawES256 = (before.CPUMicros + after.CPUMicros) / 2
				rep.Results = append(rep.Results, res)
				fmt.Fprintln(stdout, "  "+res.line())
				if !res.correct() {
					incorrect = true
				}
			}
		}
	}
	rep.Finished = time.Now()
	rep.LoadEnd = loadAvg()
	rep.Scenarios = scs
	if err := rep.write(outDir); err != nil {
		return err
	}
	rep.summary(stdout, outDir)
	if incorrect {
		return fmt.Errorf("%w (see %s)", errIncorrect, filepath.Join(outDir, "report.md"))
	}
	return nil
}

// gitDescribe names the commit of the work tree, and whether it has
// uncommitted changes.
func gitDescribe(root string) string {
	out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "an unknown commit"
	}
	return "commit " + strings.TrimSpace(string(out))
}

// calibration is one measurement of the raw ES256 check.
type calibration struct {
	CPUMicros  float64 `json:"cpu_us"`
	WallMicros float64 `json:"wall_us"`
	OnCPU      int     `json:"on_cpu"` // -1: not pinned
}

// calibrate measures the raw ES256 signature check of one of the run's
// tokens on the service's CPU, while no scenario runs (the scenario's
// processes are started after it and stopped before it).
func (t *tool) calibrate() (calibration, error) {
	var (
		cpu, wall time.Duration
		err       error
	)
	measure := func() { cpu, wall, err = t.idp.rawVerifyCost(t.tokens[0], t.calibrateIters) }
	if t.serviceCPU >= 0 {
		if perr := onCPU(t.serviceCPU, measure); perr != nil {
			return calibration{}, perr
		}
	} else {
		runtime.LockOSThread()
		measure()
		runtime.UnlockOSThread()
	}
	if err != nil {
		return calibration{}, err
	}
	return calibration{CPUMicros: float64(cpu) / 1e3, WallMicros: float64(wall) / 1e3, OnCPU: t.serviceCPU}, nil
}
