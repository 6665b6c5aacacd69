// Command ensure-user serves POST /api/v1/auth/ensure-user: it verifies the
// caller's JWT, sends a createUser command to the trading Engine over Redis
// Streams, and answers with the Engine's correlated reply.
//
// Usage:
//
//	ensure-user [serve] [--flag=value ...]   run the service (the default)
//	ensure-user dev [--insecure-bind]        run locally with embedded Redis, IdP and Engine
//	ensure-user dev token --user-id ID --email E [--ttl 1h]
//	                                         mint a token from the running dev instance's key
//	ensure-user version                      print version, commit and Go version
//
// Every setting is an environment variable with a matching flag
// (HTTP_ADDR and --http-addr); see the README for the table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/app"
	"github.com/ensure-user/ensure-user/config"
	"github.com/ensure-user/ensure-user/internal/buildinfo"
	"github.com/ensure-user/ensure-user/internal/zaplog"
)

// exitUsage is the status for a bad command line or configuration.
const exitUsage = 2

// usageError marks errors caused by the command line or configuration.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "ensure-user:", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(exitUsage)
	}
	os.Exit(1)
}

// run dispatches the subcommand. It returns when ctx is cancelled (SIGTERM or
// SIGINT) and the service has shut down.
func run(ctx context.Context, args []string, env config.Lookup, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, env, stderr)
	case "dev":
		return dev(ctx, args, env, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, buildinfo.Read())
		return nil
	case "help":
		fmt.Fprintln(stdout, "usage: ensure-user [serve|dev|dev token|version] [--flag=value ...]; ensure-user serve --help lists the flags")
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q (want serve, dev or version)", cmd)}
}

// serve runs the production service: configuration from the environment and
// flags, no embedded parts, every required setting must be present.
func serve(ctx context.Context, args []string, env config.Lookup, stderr io.Writer) error {
	fs := flag.NewFlagSet("ensure-user serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lookup, err := parseFlags(fs, args, env)
	if err != nil {
		return helpIsNoError(err)
	}
	cfg, err := config.Load(lookup)
	if err != nil {
		return usageError{fmt.Errorf("invalid configuration:\n%w", err)}
	}
	cfg = withInstanceID(cfg)
	log, err := zaplog.New(cfg.Log)
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = log.Sync() }()
	return start(ctx, cfg, log)
}

// start builds and runs the app until ctx ends.
func start(ctx context.Context, cfg config.Config, log *zap.Logger) error {
	log.Info("starting", zap.Stringer("build", buildinfo.Read()), zap.Any("config", cfg.Effective()))
	for _, w := range cfg.Warnings() {
		log.Warn("weakened check: " + w)
	}
	a, cleanup, err := app.Build(cfg, log)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	defer cleanup()
	return a.Run(ctx)
}

// withInstanceID defaults INSTANCE_ID to hostname-pid.
func withInstanceID(cfg config.Config) config.Config {
	host, _ := os.Hostname()
	return cfg.WithInstanceID(host, os.Getpid())
}

// parseFlags parses args as fs's own flags plus one flag per configuration
// variable, and returns the lookup in which flags win over the environment.
func parseFlags(fs *flag.FlagSet, args []string, env config.Lookup) (config.Lookup, error) {
	lookup, rest, err := config.WithFlags(fs, args, env)
	if err != nil {
		return nil, usageError{err}
	}
	if len(rest) > 0 {
		return nil, usageError{fmt.Errorf("unexpected arguments: %q", rest)}
	}
	return lookup, nil
}

// helpIsNoError turns the -help request, already answered by the flag
// package, into success.
func helpIsNoError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}
