// Command soak runs the real binaries for a while under mixed traffic and
// Redis restarts, and fails when the service's memory or goroutines keep
// growing. It is `make soak` (flags through SOAK_FLAGS); it is not part of
// `make test`. It lives in the tools module (tools/go.mod); the binaries it
// runs are built from the service module at the repository root, as make
// build builds them.
//
// Usage:
//
//	soak [-duration 5m] [-rate 200] [-workers 32] [-restart-every 1m] [-sample-every 5s] [-warmup 1m] [-keep]
//
// It builds ensure-user and engine-sim, starts a redis-server of its own
// (append-only file on, free loopback port), a local identity provider,
// engine-sim and ensure-user serve, and sends a mix of valid calls (5,000
// users) and invalid ones (expired, wrong audience, bad signature, garbage,
// no token). Redis is restarted on the same port and files every
// -restart-every, alternately killed (SIGKILL) and stopped (SIGTERM). Every
// -sample-every it prints the service's resident memory (VmRSS from
// /proc/<pid>/status) and goroutines (go_goroutines from /metrics).
//
// It exits 1 when, after the warm-up, either quantity keeps growing (see
// criterion in verdict.go: the median of the last third of the samples
// against the first third's, with a tolerance, and no steady climb across
// the thirds); when a call gets an answer its kind never should (a valid
// token refused, an invalid one accepted, a transport error, a 500); when
// the service is not ready again within 30 s of a Redis restart; when it
// exits, or does not stop cleanly on SIGTERM at the end; or when its log
// holds a token. -duration 30s is a quick check of the tool itself.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ensure-user/ensure-user/internal/proc"
)

// exitUsage is the status for a bad command line.
const exitUsage = 2

// The main packages the soak builds and runs.
const (
	servicePkg = "./cmd/ensure-user"
	enginePkg  = "./cmd/engine-sim"
)

// recoveryLimit bounds how long after a Redis restart the service may take
// to be ready again.
const recoveryLimit = 30 * time.Second

// Criteria of "keeps growing"; see criterion.
var (
	rssCriterion       = criterion{Ratio: 0.20, Slack: 8, FloorRatio: 0.05, FloorSlack: 2} // MiB
	goroutineCriterion = criterion{Ratio: 0.10, Slack: 10, FloorRatio: 0.05, FloorSlack: 5}
)

type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "soak:", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(exitUsage)
	}
	os.Exit(1)
}

// options are the command line.
type options struct {
	duration, restartEvery, sampleEvery, warmup time.Duration
	rate, workers                               int
	keep                                        bool
}

func parse(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&o.duration, "duration", 5*time.Minute, "how long to run the traffic")
	fs.IntVar(&o.rate, "rate", 200, "requests per second, at most")
	fs.IntVar(&o.workers, "workers", 32, "concurrent clients")
	fs.DurationVar(&o.restartEvery, "restart-every", 0, "time between Redis restarts (0: 1m, or a third of -duration when that is shorter)")
	fs.DurationVar(&o.sampleEvery, "sample-every", 0, "time between samples (0: 5s, or -duration/15 when that is shorter)")
	fs.DurationVar(&o.warmup, "warmup", 0, "samples before this are left out of the verdict (0: a fifth of -duration, at most 1m)")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory (logs, append-only file) after a passing run")
	if err := fs.Parse(args); err != nil {
		return o, usageError{err}
	}
	if fs.NArg() > 0 {
		return o, usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if o.duration < 10*time.Second || o.rate <= 0 || o.workers <= 0 || o.restartEvery < 0 || o.sampleEvery < 0 || o.warmup < 0 {
		return o, usageError{errors.New("-duration must be at least 10s; -rate and -workers positive; the other durations not negative")}
	}
	if o.restartEvery == 0 {
		o.restartEvery = min(time.Minute, o.duration/3)
	}
	if o.sampleEvery == 0 {
		o.sampleEvery = min(5*time.Second, o.duration/15)
	}
	if o.warmup == 0 {
		o.warmup = min(time.Minute, o.duration/5)
	}
	return o, nil
}

// sample is one measurement of the service.
type sample struct {
	at         time.Duration
	rssMiB     float64
	goroutines float64
	fds        int           // open descriptors, for diagnosis: mostly connections
	answers    map[int]int64 // in the interval before it, by status
	perSecond  float64
	redisUp    bool
}

func run(ctx context.Context, args []string, stdout io.Writer) (err error) {
	o, err := parse(args, stdout)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ensure-user-soak-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil && !o.keep {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(stdout, "logs and data kept in %s\n", dir)
		}
	}()

	fmt.Fprintf(stdout, "soak: %s at up to %d req/s from %d clients; Redis restart every %s; sample every %s; warm-up %s\n",
		o.duration, o.rate, o.workers, o.restartEvery, o.sampleEvery, o.warmup)
	root, err := proc.ModuleRoot()
	if err != nil {
		return err
	}
	bins, err := proc.Build(ctx, root, dir, servicePkg, enginePkg)
	if err != nil {
		return err
	}

	// Everything started is stopped on the way out, in reverse order.
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	redisPort, err := proc.FreePort()
	if err != nil {
		return err
	}
	redis := &redisServer{port: redisPort, dir: dir}
	if err := redis.start(ctx); err != nil {
		return fmt.Errorf("redis-server: %w (see %s)", err, filepath.Join(dir, "redis.log"))
	}
	stops = append(stops, func() { _ = redis.proc.Stop(syscall.SIGTERM, 10*time.Second) })
	id, err := startIdP()
	if err != nil {
		return err
	}
	stops = append(stops, id.stop)
	redisURL := "redis://" + redis.addr() + "/0"
	path := "PATH=" + os.Getenv("PATH")
	engine, err := proc.Start("engine-sim", bins[enginePkg], filepath.Join(dir, "engine-sim.log"),
		[]string{path, "REDIS_URL=" + redisURL, "ENGINE_CLAIM_IDLE=5s"})
	if err != nil {
		return err
	}
	stops = append(stops, func() { _ = engine.Stop(syscall.SIGTERM, 10*time.Second) })
	httpPort, err := proc.FreePort()
	if err != nil {
		return err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(httpPort)
	svc, err := proc.Start("ensure-user", bins[servicePkg], filepath.Join(dir, "ensure-user.log"), []string{
		path, "HTTP_ADDR=127.0.0.1:" + strconv.Itoa(httpPort), "REDIS_URL=" + redisURL,
		"JWKS_URL=" + id.url, "JWT_ISSUER=" + issuer, "JWT_AUDIENCE=" + audience,
		"ENGINE_REPLY_TIMEOUT=2s", "SHUTDOWN_DELAY=0s", "SHUTDOWN_TIMEOUT=10s", "LOG_LEVEL=info",
	}, "serve")
	if err != nil {
		return err
	}
	stops = append(stops, func() { _ = svc.Stop(syscall.SIGKILL, 10*time.Second) })
	probe := &http.Client{Timeout: 5 * time.Second}
	ready := func() bool { return httpStatus(probe, base+"/readyz") == http.StatusOK }
	if err := proc.WaitFor(ctx, 30*time.Second, ready, svc.Done()); err != nil {
		return fmt.Errorf("ensure-user not ready: %w (see %s)", err, svc.Log)
	}
	mix, err := kinds(id, time.Now().Add(o.duration+10*time.Minute))
	if err != nil {
		return err
	}

	var c counts
	runCtx, stopRun := context.WithTimeout(ctx, o.duration)
	defer stopRun()
	start := time.Now()
	clients := traffic(runCtx, base, mix, o.rate, o.workers, &c)
	restarts := restarter(runCtx, o.duration, o.restartEvery, redis, ready)

	samples, err := sampleLoop(runCtx, stdout, o.sampleEvery, start, svc, base, redis, &c)
	if err != nil {
		return err
	}
	clients.Wait()
	rs := restarts()
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	return verdict(stdout, o, samples, rs, &c, svc)
}

// restartResult is one Redis restart.
type restartResult struct {
	at       time.Duration
	signal   syscall.Signal
	recovery time.Duration // until /readyz answered 200 again
	err      error
}

// restarter restarts Redis every every until ctx ends, alternately with
// SIGKILL and SIGTERM, and measures how long the service takes to be ready
// again; it skips a restart due less than every/2 before the end of the run
// (run), which could not show a recovery. The returned function waits for it
// and returns the restarts.
func restarter(ctx context.Context, run, every time.Duration, redis *redisServer, ready func() bool) func() []restartResult {
	var (
		mu  sync.Mutex
		out []restartResult
	)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		sigs := []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM}
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if time.Since(start) > run-every/2 {
				return
			}
			r := restartResult{at: time.Since(start), signal: sigs[i%2]}
			t0 := time.Now()
			// The restart itself runs to its end even when the run ends
			// meanwhile: Redis must be up for the final checks.
			if r.err = redis.restart(context.WithoutCancel(ctx), r.signal); r.err == nil {
				r.err = proc.WaitFor(context.WithoutCancel(ctx), recoveryLimit, ready, nil)
			}
			r.recovery = time.Since(t0)
			mu.Lock()
			out = append(out, r)
			mu.Unlock()
		}
	}()
	return func() []restartResult {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return out
	}
}

// sampleLoop samples the service every every until ctx ends, printing each
// sample, and returns them all.
func sampleLoop(ctx context.Context, w io.Writer, every time.Duration, start time.Time, svc *proc.Child,
	base string, redis *redisServer, c *counts) ([]sample, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "time\trss MiB\tgoroutines\tfds\treq/s\t200\t202\t401\t502\t503\tother\tredis\t")
	_ = tw.Flush()
	statuses := []int{200, 202, 401, 502, 503}
	prev := map[int]int64{}
	prevTotal, prevAt := int64(0), start
	var out []sample
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return out, nil
		case <-tick.C:
		}
		if !svc.Running() {
			return out, fmt.Errorf("ensure-user exited during the soak (%v); see %s", svc.Err(), svc.Log)
		}
		s := sample{at: time.Since(start).Round(time.Second), answers: map[int]int64{}, redisUp: proc.Pong(context.Background(), redis.addr())}
		rssKB, err := proc.StatusKB(svc.Pid(), "VmRSS")
		if err != nil {
			return out, err
		}
		s.rssMiB = float64(rssKB) / (1 << 10)
		s.fds = openFiles(svc.Pid())
		// Not ctx: the run may end during the scrape, which still counts.
		m, err := proc.Scrape(context.Background(), client, base+"/metrics", "go_goroutines")
		if err != nil {
			return out, fmt.Errorf("scrape go_goroutines: %w", err)
		}
		var ok bool
		if s.goroutines, ok = m["go_goroutines"]; !ok {
			return out, fmt.Errorf("no go_goroutines in %s/metrics", base)
		}
		now, total := time.Now(), c.total.Load()
		s.perSecond = float64(total-prevTotal) / now.Sub(prevAt).Seconds()
		known := int64(0)
		for _, st := range statuses {
			v := c.status(st)
			s.answers[st] = v - prev[st]
			prev[st] = v
			known += s.answers[st]
		}
		other := total - prevTotal - known
		prevTotal, prevAt = total, now
		out = append(out, s)
		up := "up"
		if !s.redisUp {
			up = "DOWN"
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.0f\t%d\t%.0f\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", s.at, s.rssMiB, s.goroutines, s.fds, s.perSecond,
			s.answers[200], s.answers[202], s.answers[401], s.answers[502], s.answers[503], other, up)
		_ = tw.Flush()
	}
}

// verdict stops the service, prints the summary and returns an error when
// the run failed.
func verdict(w io.Writer, o options, samples []sample, rs []restartResult, c *counts, svc *proc.Child) error {
	var problems []string
	if err := svc.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
		problems = append(problems, fmt.Sprintf("ensure-user did not stop cleanly on SIGTERM: %v", err))
	}
	if b, err := os.ReadFile(svc.Log); err != nil {
		problems = append(problems, err.Error())
	} else if strings.Contains(string(b), "eyJ") {
		problems = append(problems, "the service log contains something that looks like a token")
	}

	var rss, gor []float64
	for _, s := range samples {
		if s.at >= o.warmup {
			rss = append(rss, s.rssMiB)
			gor = append(gor, s.goroutines)
		}
	}
	fmt.Fprintln(w)
	for _, q := range []struct {
		name string
		vs   []float64
		c    criterion
	}{{"RSS (MiB)", rss, rssCriterion}, {"goroutines", gor, goroutineCriterion}} {
		tr, err := assess(q.vs, q.c)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", q.name, err))
			continue
		}
		state := "steady"
		if tr.Grows {
			state = "KEEPS GROWING: " + tr.Why
			problems = append(problems, q.name+" keeps growing")
		}
		fmt.Fprintf(w, "%-11s medians of the thirds after the warm-up: %.1f, %.1f, %.1f (limit %.1f): %s\n",
			q.name, tr.First, tr.Middle, tr.Last, tr.Limit, state)
	}

	var worst time.Duration
	for _, r := range rs {
		worst = max(worst, r.recovery)
		if r.err != nil {
			problems = append(problems, fmt.Sprintf("Redis restart at %s (%s): service not ready again: %v", r.at.Round(time.Second), r.signal, r.err))
		}
	}
	recov := make([]string, len(rs))
	for i, r := range rs {
		recov[i] = fmt.Sprintf("%s %s→ready %s", r.at.Round(time.Second), sigName(r.signal), r.recovery.Round(10*time.Millisecond))
	}
	fmt.Fprintf(w, "Redis restarts: %d [%s]; slowest back to ready: %s\n", len(rs), strings.Join(recov, ", "), worst.Round(10*time.Millisecond))

	var keys []int
	c.byStatus.Range(func(k, _ any) bool { keys = append(keys, k.(int)); return true })
	sort.Ints(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		label := strconv.Itoa(k)
		if k == 0 {
			label = "transport error"
		}
		parts[i] = fmt.Sprintf("%s: %d", label, c.status(k))
	}
	fmt.Fprintf(w, "requests: %d (%s); unexpected answers: %d\n", c.total.Load(), strings.Join(parts, ", "), c.unexpected.Load())
	if n := c.unexpected.Load(); n > 0 {
		problems = append(problems, fmt.Sprintf("%d unexpected answers, e.g. %s", n, strings.Join(c.examples, "; ")))
	}

	if len(problems) > 0 {
		fmt.Fprintln(w, "FAIL")
		return errors.New(strings.Join(problems, "\n      "))
	}
	fmt.Fprintln(w, "PASS")
	return nil
}

func sigName(s syscall.Signal) string {
	if s == syscall.SIGKILL {
		return "kill"
	}
	return "term"
}
