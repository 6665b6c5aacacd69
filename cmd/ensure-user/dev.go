//go:build !nodev

// The dev subcommand lives in this file, left out of production builds:
// make build and the Dockerfile build with -tags nodev, so the binary that
// runs serve links no embedded Redis (miniredis and its Lua interpreter), no
// dev signing key and no dev banner (nodev.go stands in for dev there).
// A plain go build or go run, as the README's make run and the tests use,
// keeps it.

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/oteltrace"
	"github.com/ensure-user/ensure-user/adapters/redisbus"
	"github.com/ensure-user/ensure-user/app"
	"github.com/ensure-user/ensure-user/config"
	"github.com/ensure-user/ensure-user/internal/devkit"
	"github.com/ensure-user/ensure-user/internal/enginesim"
	"github.com/ensure-user/ensure-user/internal/zaplog"
)

// Sample identity of the banner's ready-to-paste token.
const (
	devUserID = "dev-user-1"
	devEmail  = "dev-user-1@example.com"
	devTTL    = time.Hour
)

// dev runs the service for a first run on a laptop: every part whose
// variable is not set in the environment is embedded (Redis, identity
// provider, Engine); the service itself is assembled exactly as in serve.
func dev(ctx context.Context, args []string, env config.Lookup, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "token" {
		return devToken(args[1:], env, stdout, stderr)
	}
	fs := flag.NewFlagSet("ensure-user dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	insecureBind := fs.Bool("insecure-bind", false, "allow a non-loopback HTTP_ADDR (dev mode is not for production)")
	lookup, err := parseFlags(fs, args, env)
	if err != nil {
		return helpIsNoError(err)
	}
	embedEngine := true
	if v, ok := env("ENGINE_EMBEDDED"); ok {
		if embedEngine, err = strconv.ParseBool(v); err != nil {
			return usageError{fmt.Errorf("ENGINE_EMBEDDED: %q is not a boolean", v)}
		}
	}

	// Dev defaults replace serve's only where the environment is silent.
	defaults := map[string]string{
		"HTTP_ADDR":      "127.0.0.1:8000",
		"LOG_FORMAT":     "console",
		"SHUTDOWN_DELAY": "0s",
		"JWT_ISSUER":     devkit.Issuer,
		"JWT_AUDIENCE":   devkit.Audience,
	}
	devLookup := func(name string) (string, bool) {
		if v, ok := lookup(name); ok {
			return v, true
		}
		v, ok := defaults[name]
		return v, ok
	}
	var parts banner
	getenv := getenvOf(env)
	transport, _ := devLookup("ENGINE_TRANSPORT")
	useRedis := transport == "" || transport == config.TransportRedis

	if _, set := lookup("REDIS_URL"); !set && useRedis {
		url, stop, err := devkit.StartRedis()
		if err != nil {
			return err
		}
		defer stop()
		defaults["REDIS_URL"] = url
		parts.add("redis", "embedded (in-process miniredis at "+url+")")
	} else if useRedis {
		u, _ := lookup("REDIS_URL")
		parts.add("redis", "real: "+config.RedactedURL(u))
	}

	var key *devkit.Key
	if _, set := lookup("JWKS_URL"); !set {
		iss, _ := devLookup("JWT_ISSUER")
		aud, _ := devLookup("JWT_AUDIENCE")
		if key, err = devkit.NewKey(iss, aud); err != nil {
			return err
		}
		url, stop, err := key.ServeJWKS()
		if err != nil {
			return err
		}
		defer stop()
		remove, err := key.Save(devkit.StateDir(getenv))
		if err != nil {
			return err
		}
		defer remove()
		defaults["JWKS_URL"] = url
		parts.add("identity", "embedded dev signing key (ES256), JWKS at "+url)
	} else {
		u, _ := lookup("JWKS_URL")
		parts.add("identity", "real: "+u)
	}

	cfg, err := config.Load(devLookup)
	if err != nil {
		return usageError{fmt.Errorf("invalid configuration:\n%w", err)}
	}
	cfg = withInstanceID(cfg)
	if err := checkLoopback(cfg.HTTP.Addr, *insecureBind); err != nil {
		return usageError{err}
	}
	log, err := zaplog.New(cfg.Log)
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = log.Sync() }()

	a, cleanup, err := app.Build(cfg, log)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	defer cleanup()
	if err := a.Listen(); err != nil {
		return err
	}

	engineCtx, stopEngine := context.WithCancel(ctx)
	defer stopEngine()
	engineDone := make(chan error, 1)
	switch {
	case !useRedis:
		parts.add("engine", "in-memory reference Engine (ENGINE_TRANSPORT=memory)")
		close(engineDone)
	case embedEngine:
		if err := startEngine(engineCtx, cfg, log, engineDone); err != nil {
			return err
		}
		parts.add("engine", "embedded reference Engine reading "+cfg.Bus.RequestStream)
	default:
		parts.add("engine", "real: an external Engine must read "+cfg.Bus.RequestStream)
		close(engineDone)
	}

	if cfg.Tracing.Enabled() {
		parts.add("tracing", "spans of the service and the embedded Engine go to "+cfg.Tracing.RedactedEndpoint())
	} else {
		parts.add("tracing", "off; to see traces, run a collector (e.g. Jaeger all-in-one, OTLP on :4318) and "+
			"start with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318")
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- a.Serve(ctx) }()
	url := "http://" + a.Addr().String()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = a.WaitReady(wctx)
	cancel()
	if err != nil {
		log.Warn("not ready yet; the banner's request may answer 503 until it is", zap.Error(err))
	}
	if err := parts.print(stdout, url, key); err != nil {
		return err
	}
	err = <-serveErr
	stopEngine()
	if eerr := <-engineDone; eerr != nil && !errors.Is(eerr, context.Canceled) {
		err = errors.Join(err, fmt.Errorf("embedded engine: %w", eerr))
	}
	return err
}

// startEngine runs the reference Engine in this process against the same
// Redis and streams, through the same protocol as production. With tracing
// on, it exports its spans as engine-sim, so a local trace shows both sides.
func startEngine(ctx context.Context, cfg config.Config, log *zap.Logger, done chan<- error) error {
	tcfg := cfg.Tracing
	if tcfg.ServiceName == "" || tcfg.ServiceName == config.ServiceName {
		tcfg.ServiceName = "engine-sim"
	}
	tracing, stopTracing, err := oteltrace.New(ctx, tcfg, log.Named("engine"), nil)
	if err != nil {
		return fmt.Errorf("embedded engine: %w", err)
	}
	var opts []enginesim.Option
	if tracing.Enabled() {
		opts = append(opts, enginesim.WithTracing(tracing.TracerProvider(), tracing.Propagator()))
	}
	client, closeClient, err := redisbus.Dial(cfg.Redis, log.Named("engine"))
	if err != nil {
		return fmt.Errorf("embedded engine: %w", err)
	}
	sim, err := enginesim.New(enginesim.Config{
		RequestStream: cfg.Bus.RequestStream,
		ReplyStream:   cfg.Bus.ReplyStream,
	}, log.Named("engine"), client, nil, opts...)
	if err != nil {
		closeClient()
		return fmt.Errorf("embedded engine: %w", err)
	}
	go func() {
		defer closeClient()
		err := sim.Run(ctx)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stopTracing(fctx)
		done <- err
	}()
	return nil
}

// checkLoopback refuses a listen address reachable from other machines,
// unless the developer insists.
func checkLoopback(addr string, insecure bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR: %v", err)
	}
	if config.IsLoopbackHost(host) || insecure {
		return nil
	}
	return fmt.Errorf("HTTP_ADDR %q is not a loopback address: dev mode listens on loopback only "+
		"(it embeds a dev signing key anyone could use); pass --insecure-bind to override", addr)
}

// banner collects what is embedded and what is real.
type banner [][2]string

func (b *banner) add(part, what string) { *b = append(*b, [2]string{part, what}) }

// print writes the start-up banner: where the service listens, what is
// embedded, and - with an embedded key - a token and a request to paste.
func (b banner) print(w io.Writer, url string, key *devkit.Key) error {
	var s strings.Builder
	s.WriteString("\nensure-user dev - a local setup, NOT FOR PRODUCTION\n\n")
	fmt.Fprintf(&s, "  %-9s %s\n", "listening", url)
	for _, p := range b {
		fmt.Fprintf(&s, "  %-9s %s\n", p[0], p[1])
	}
	if key != nil {
		tok, err := key.Mint(devUserID, devEmail, devTTL)
		if err != nil {
			return err
		}
		fmt.Fprintf(&s, "\n  dev token for %s <%s>, valid %s:\n\n%s\n", devUserID, devEmail, devTTL, tok)
		fmt.Fprintf(&s, "\n  try it:\n\ncurl -sS -X POST %s/api/v1/auth/ensure-user -H 'Authorization: Bearer %s'\n", url, tok)
		s.WriteString("\n  more tokens: ensure-user dev token --user-id ID --email EMAIL [--ttl 1h]\n")
	}
	s.WriteString("\n")
	_, err := io.WriteString(w, s.String())
	return err
}

// devToken mints a token with the running dev instance's key.
func devToken(args []string, env config.Lookup, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ensure-user dev token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	userID := fs.String("user-id", "", "user id (sub claim) of the token (required)")
	email := fs.String("email", "", "email claim of the token (required)")
	ttl := fs.Duration("ttl", devTTL, "how long the token stays valid")
	if err := fs.Parse(args); err != nil {
		return helpIsNoError(usageError{err})
	}
	switch {
	case *userID == "":
		return usageError{errors.New("--user-id is required")}
	case *email == "":
		return usageError{errors.New("--email is required")}
	case *ttl <= 0:
		return usageError{errors.New("--ttl must be positive")}
	}
	key, err := devkit.LoadKey(devkit.StateDir(getenvOf(env)))
	if err != nil {
		return err
	}
	tok, err := key.Mint(*userID, *email, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// getenvOf adapts a Lookup to the os.Getenv shape.
func getenvOf(env config.Lookup) func(string) string {
	return func(k string) string { v, _ := env(k); return v }
}
