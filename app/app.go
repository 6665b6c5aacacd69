// Package app is the composition root: it assembles the adapters around the
// use case with Google Wire (wire.go, wire_gen.go) and runs the result with a
// graceful lifecycle. It holds no business logic.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/netutil"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
)

// App is the assembled service. Create it with Build; run it with Run, or
// Listen then Serve when the caller needs the bound address first.
type App struct {
	cfg    echohttp.Config
	log    *zap.Logger
	server *echohttp.Server
	ln     net.Listener
	mln    net.Listener
}

// NewApp wraps the HTTP server with the lifecycle. Wire calls it.
func NewApp(cfg echohttp.Config, log *zap.Logger, server *echohttp.Server) *App {
	return &App{cfg: cfg, log: log, server: server}
}

// Listen binds the HTTP listener (and the metrics listener when
// METRICS_ADDR is set), so that Addr is known before Serve.
func (a *App) Listen() error {
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR %s: %w", a.cfg.Addr, err)
	}
	// Beyond the cap, new connections wait in the kernel's accept queue
	// instead of taking the file descriptors Redis and the IdP need.
	a.ln = netutil.LimitListener(ln, maxConnections(a.cfg.MaxConnections))
	if m := a.server.MetricsAddr(); m != "" {
		mln, err := net.Listen("tcp", m)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("listen on METRICS_ADDR %s: %w", m, err)
		}
		a.mln = mln
	}
	return nil
}

// fdReserve is what the connection cap leaves of the open-file limit for
// Redis, the IdP, logs and the metrics listener.
const fdReserve = 512

// maxConnections is HTTP_MAX_CONNECTIONS, or the open-file limit (which the
// Go runtime raises to its hard limit at start) minus fdReserve.
func maxConnections(configured int) int {
	if configured > 0 {
		return configured
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 2*fdReserve {
		return fdReserve
	}
	return int(min(lim.Cur-fdReserve, 1<<20))
}

// Addr is the bound HTTP address (after Listen).
func (a *App) Addr() net.Addr { return a.ln.Addr() }

// MetricsAddr is the bound metrics address, or nil when /metrics is served
// on the main listener.
func (a *App) MetricsAddr() net.Addr {
	if a.mln == nil {
		return nil
	}
	return a.mln.Addr()
}

// Serve serves until ctx is done, then shuts down gracefully: readiness
// turns 503 at once, the listener closes after SHUTDOWN_DELAY so the gateway
// can notice, and in-flight requests get SHUTDOWN_TIMEOUT to finish. The
// caller then runs Build's cleanup, which stops the reply reader and closes
// Redis - after the last request has its answer.
func (a *App) Serve(ctx context.Context) error {
	if a.ln == nil {
		if err := a.Listen(); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- a.server.Serve(a.ln, a.mln) }()
	a.log.Info("listening", zap.Stringer("addr", a.ln.Addr()))

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	a.log.Info("shutting down: readiness is now 503",
		zap.Duration("delay", a.cfg.ShutdownDelay), zap.Duration("timeout", a.cfg.ShutdownTimeout))
	a.server.Drain()
	if a.cfg.ShutdownDelay > 0 {
		t := time.NewTimer(a.cfg.ShutdownDelay)
		select {
		case <-t.C:
		case err := <-errc:
			t.Stop()
			return fmt.Errorf("serve: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer cancel()
	serr := a.server.Shutdown(sctx)
	if err := <-errc; err != nil {
		serr = errors.Join(serr, err)
	}
	if serr != nil {
		return fmt.Errorf("shutdown: %w", serr)
	}
	a.log.Info("drained: every in-flight request has its answer")
	return nil
}

// WaitReady waits until the service would answer /readyz with 200 (a key
// set loaded, Redis answering, the reply reader running), or ctx ends.
func (a *App) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := a.server.Ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", err)
		case <-tick.C:
		}
	}
}

// Run is Listen then Serve.
func (a *App) Run(ctx context.Context) error {
	if err := a.Listen(); err != nil {
		return err
	}
	return a.Serve(ctx)
}
