// Command engine-sim is the reference Engine: it answers the ensure-user
// service's createUser commands over Redis Streams as the trading Engine
// does, for staging smoke tests, local development and load tests. Several
// instances share the work through one consumer group; see package
// enginesim for what is guaranteed.
//
// Usage:
//
//	engine-sim [--flag=value ...]
//
// Every setting is an environment variable with a matching flag
// (ENGINE_REPLY_DELAY and --engine-reply-delay); a flag wins over its
// variable, and engine-sim --help lists them all. The Redis connection takes
// the service's variables (REDIS_URL, REDIS_TLS_*), so one environment
// serves both. engine-sim stops on SIGTERM or SIGINT after finishing the
// batch in hand, flushes its spans, and exits 0; a bad setting exits 2,
// naming its variable.
//
// Tracing takes the standard OTEL_* variables (see package oteltrace), with
// service name engine-sim: it is off unless OTEL_EXPORTER_OTLP_ENDPOINT is
// set, and then each command's spans continue the trace of its traceparent
// (see enginesim.WithTracing).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/oteltrace"
	"github.com/ensure-user/ensure-user/adapters/redisbus"
	"github.com/ensure-user/ensure-user/config"
	"github.com/ensure-user/ensure-user/internal/buildinfo"
	"github.com/ensure-user/ensure-user/internal/enginesim"
	"github.com/ensure-user/ensure-user/internal/zaplog"
)

// exitUsage is the status for a bad command line or setting.
const exitUsage = 2

// metricsShutdown bounds the metrics server's shutdown.
const metricsShutdown = 5 * time.Second

// tracingShutdown bounds the flush of the spans still queued at exit.
const tracingShutdown = 5 * time.Second

// serviceName is the default OTEL_SERVICE_NAME.
const serviceName = "engine-sim"

// usageError marks errors caused by the command line or a setting.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "engine-sim:", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(exitUsage)
	}
	os.Exit(1)
}

// vars lists every setting: the Engine's, then those shared with the
// service, with the service's defaults.
func vars() []config.Var {
	vs := slices.Clone(enginesim.Vars)
	for _, v := range config.Vars {
		switch v.Name {
		case "REDIS_URL", "REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "LOG_LEVEL", "LOG_FORMAT":
			vs = append(vs, v)
		}
	}
	vs = append(vs, config.Var{Name: "METRICS_ADDR", Usage: "listen address of /metrics (empty: no metrics server)"})
	for _, v := range oteltrace.Vars {
		if v.Name == "OTEL_SERVICE_NAME" {
			v.Default = serviceName
		}
		vs = append(vs, config.Var{Name: v.Name, Default: v.Default, Usage: v.Usage})
	}
	return vs
}

// settings is the binary's whole configuration.
type settings struct {
	engine  enginesim.Config
	redis   redisbus.ConnConfig
	log     zaplog.Config
	metrics string // METRICS_ADDR
	tracing oteltrace.Config
}

// run runs the Engine until ctx ends.
func run(ctx context.Context, args []string, env config.Lookup, stderr io.Writer) error {
	fs := flag.NewFlagSet("engine-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lookup, err := withFlags(fs, args, env)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	s, err := load(lookup)
	if err != nil {
		return usageError{fmt.Errorf("invalid configuration:\n%w", err)}
	}
	log, err := zaplog.New(s.log)
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = log.Sync() }()
	log.Info("starting engine-sim", zap.Stringer("build", buildinfo.Read()),
		zap.String("redis", config.RedactedURL(s.redis.URL.Reveal())))

	client, closeClient, err := redisbus.Dial(s.redis, log)
	if err != nil {
		return err
	}
	defer closeClient()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tracing, stopTracing, err := oteltrace.New(ctx, s.tracing, log, reg)
	if err != nil {
		return err
	}
	// Deferred after closeClient, so it runs before: Run has returned, every
	// span has ended, and the flush still has the whole bound.
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracingShutdown)
		defer cancel()
		if err := stopTracing(ctx); err != nil {
			log.Warn("spans still queued at exit are lost", zap.Error(err))
		}
	}()
	sim, err := enginesim.New(s.engine, log, client, reg,
		enginesim.WithTracing(tracing.TracerProvider(), tracing.Propagator()))
	if err != nil {
		return err
	}
	if s.metrics != "" {
		stopMetrics, err := serveMetrics(s.metrics, reg, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	return sim.Run(ctx)
}

// withFlags defines a flag per variable of vars (--engine-reply-delay for
// ENGINE_REPLY_DELAY), parses args, and returns a Lookup in which a flag
// given on the command line wins over env.
func withFlags(fs *flag.FlagSet, args []string, env config.Lookup) (config.Lookup, error) {
	vals := map[string]*string{}
	for _, v := range vars() {
		vals[v.Name] = fs.String(config.FlagName(v.Name), v.Default, v.Usage+" (env "+v.Name+")")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return func(name string) (string, bool) {
		if set[config.FlagName(name)] {
			return *vals[name], true
		}
		return env(name)
	}, nil
}

// load reads and validates every setting through lookup. The error lists
// every problem, each naming its variable.
func load(lookup config.Lookup) (settings, error) {
	get := func(name string) string {
		if v, ok := lookup(name); ok {
			return v
		}
		for _, v := range vars() {
			if v.Name == name {
				return v.Default
			}
		}
		return ""
	}
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	engine, err := enginesim.Load(lookup)
	if err != nil {
		errs = append(errs, err)
	}
	tracing, err := oteltrace.ConfigFromEnv(lookup, serviceName)
	if err != nil {
		errs = append(errs, err)
	}
	s := settings{
		engine:  engine,
		tracing: tracing,
		redis: redisbus.ConnConfig{
			URL:      config.Secret(get("REDIS_URL")),
			CAFile:   get("REDIS_TLS_CA_FILE"),
			CertFile: get("REDIS_TLS_CERT_FILE"),
			KeyFile:  get("REDIS_TLS_KEY_FILE"),
		},
		log:     zaplog.Config{Level: get("LOG_LEVEL"), Format: get("LOG_FORMAT")},
		metrics: get("METRICS_ADDR"),
	}
	u, err := url.Parse(s.redis.URL.Reveal())
	switch {
	case err != nil:
		bad("REDIS_URL", "not a URL (%s)", config.RedactedURL(s.redis.URL.Reveal())) // url's error would print the password
	case !slices.Contains([]string{"redis", "rediss", "unix", "valkey", "valkeys"}, u.Scheme):
		bad("REDIS_URL", "scheme must be redis, rediss or unix, not %q", u.Scheme)
	case (s.redis.CAFile != "" || s.redis.CertFile != "") && u.Scheme != "rediss" && u.Scheme != "valkeys":
		bad("REDIS_TLS_CA_FILE", "REDIS_TLS_* files need a rediss:// REDIS_URL")
	}
	if (s.redis.CertFile == "") != (s.redis.KeyFile == "") {
		bad("REDIS_TLS_CERT_FILE", "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, s.log.Level) {
		bad("LOG_LEVEL", "must be debug, info, warn or error, not %q", s.log.Level)
	}
	if s.log.Format != "json" && s.log.Format != "console" {
		bad("LOG_FORMAT", "must be json or console, not %q", s.log.Format)
	}
	if s.metrics != "" {
		if _, _, err := net.SplitHostPort(s.metrics); err != nil {
			bad("METRICS_ADDR", "%q is not host:port", s.metrics)
		}
	}
	return s, errors.Join(errs...)
}

// serveMetrics serves reg on addr at /metrics until the returned stop is
// called.
func serveMetrics(addr string, reg *prometheus.Registry, log *zap.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on METRICS_ADDR %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", zap.Error(err))
		}
	}()
	log.Info("metrics listening", zap.Stringer("addr", ln.Addr()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), metricsShutdown)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
