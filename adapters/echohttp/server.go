// Package echohttp is the HTTP adapter: an Echo server exposing
// POST /api/v1/auth/ensure-user, the operations endpoints (/livez, /readyz,
// /metrics, /openapi.yaml), and one error handler that turns every error into
// the JSON answer of the contract.
//
// The files: server.go builds the server and runs its lifecycle; observe.go
// is the layer around Echo (request id, limits, the request's log line and
// metrics); handler.go the endpoint; errors.go the answers; probes.go the
// operations endpoints; park.go holds waiting requests and idle connections
// outside net/http when there are many.
package echohttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Routes served by the adapter.
const (
	RouteEnsureUser = "/api/v1/auth/ensure-user"
	RouteLive       = "/livez"
	RouteReady      = "/readyz"
	RouteMetrics    = "/metrics"
	RouteOpenAPI    = "/openapi.yaml"
)

// DefaultReadHeaderTimeout is the header read bound when
// config.HTTP.ReadHeaderTimeout is zero.
const DefaultReadHeaderTimeout = 5 * time.Second

// Limits on what a request may carry.
const (
	maxBodyBytes     = 1 << 10 // the endpoint takes no body; more than this is 413
	maxRequestIDLen  = 128
	netHTTPHeaderCap = 256 << 10 // net/http's own limit: above ours, so ours answers in JSON
)

// Options are the server's collaborators beyond the use case.
type Options struct {
	// ReplyTimeout is the use case's wait; the write timeout is set above it.
	ReplyTimeout time.Duration
	// Probes decide /readyz.
	Probes []Probe
	// Registry collects the HTTP metrics and serves /metrics.
	Registry *prometheus.Registry
	// OpenAPI is the document served at /openapi.yaml (omitted when nil).
	OpenAPI []byte
	// Tracer, when set, records a server span per request, continuing the
	// trace of the request's W3C headers read with Propagator. nil: no
	// tracing, and nothing of it on the hot path.
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
}

// Server serves the HTTP API. Create it with New; it is safe for concurrent
// use.
type Server struct {
	cfg      Config
	log      *zap.Logger
	reqLog   *zap.Logger // the request lines: without the caller, which is always record
	uc       EnsureUser
	opts     Options
	echo     *echo.Echo
	http     *http.Server
	metrics  *http.Server // nil unless cfg.MetricsAddr is set
	draining atomic.Bool
	park     parking
	stats    *httpMetrics
}

// New builds the server; it listens only when Serve is called.
func New(cfg Config, log *zap.Logger, uc EnsureUser, opts Options) (*Server, error) {
	if err := cfg.Validate().Err(); err != nil {
		return nil, fmt.Errorf("echohttp: %w", err)
	}
	s := &Server{cfg: cfg, log: log.Named("http"), uc: uc, opts: opts, stats: newHTTPMetrics()}
	// Finding the caller walks the stack (about 1.5 us a line); for the
	// request line it would always name record.
	s.reqLog = s.log.WithOptions(zap.WithCaller(false))
	s.park.init(cfg.ParkAbove, s.evicted)
	if opts.Registry != nil {
		for _, c := range append([]prometheus.Collector{s.stats.requests, s.stats.duration}, s.park.collectors()...) {
			if err := opts.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register http metrics: %w", err)
			}
		}
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	if len(cfg.CORSOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:  cfg.CORSOrigins,
			AllowMethods:  []string{http.MethodPost},
			AllowHeaders:  []string{echo.HeaderAuthorization, "X-Request-ID", "Traceparent", "Tracestate"},
			ExposeHeaders: []string{"X-Request-ID", "Retry-After"},
			MaxAge:        600,
		}))
	} else {
		// Echo answers OPTIONS on a known path with 204 by itself; without
		// CORS the contract says 405.
		e.OPTIONS(RouteEnsureUser, s.route(methodNotAllowed))
	}
	e.POST(RouteEnsureUser, s.route(s.ensureUser))
	e.GET(RouteLive, s.route(s.live))
	e.GET(RouteReady, s.route(s.ready))
	if opts.Registry != nil && cfg.MetricsAddr == "" {
		e.GET(RouteMetrics, s.route(echo.WrapHandler(s.metricsHandler())))
	}
	if opts.OpenAPI != nil {
		e.GET(RouteOpenAPI, s.route(s.openAPI))
	}
	s.echo = e

	hdr := cfg.ReadHeaderTimeout
	if hdr <= 0 {
		hdr = DefaultReadHeaderTimeout
	}
	s.http = &http.Server{
		Addr:    cfg.Addr,
		Handler: s,
		// Headers must arrive quickly (slowloris); the whole request, which
		// has no body, too. Writing may wait for the Engine's reply.
		ReadHeaderTimeout: hdr,
		ReadTimeout:       hdr + 5*time.Second,
		WriteTimeout:      opts.ReplyTimeout + 10*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    netHTTPHeaderCap,
		ErrorLog:          zap.NewStdLog(s.log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))),
		ConnState:         s.park.connState,
	}
	if cfg.MetricsAddr != "" && opts.Registry != nil {
		mux := http.NewServeMux()
		mux.Handle("GET "+RouteMetrics, s.metricsHandler())
		s.metrics = &http.Server{
			Addr:              cfg.MetricsAddr,
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
		}
	}
	return s, nil
}

// Handler returns the HTTP handler, for tests that serve it themselves.
func (s *Server) Handler() http.Handler { return s }

// Serve accepts connections on ln (and, when configured, on the metrics
// listener mln) until Shutdown. It returns nil after a clean shutdown.
func (s *Server) Serve(ln, mln net.Listener) error {
	errc := make(chan error, 2)
	go func() { errc <- s.http.Serve(s.park.listen(ln)) }()
	n := 1
	if s.metrics != nil && mln != nil {
		n++
		go func() { errc <- s.metrics.Serve(mln) }()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && first == nil {
			first = err
			_ = s.http.Close()
			if s.metrics != nil {
				_ = s.metrics.Close()
			}
		}
	}
	return first
}

// MetricsAddr is the separate metrics address, or "" when /metrics is served
// on the main listener.
func (s *Server) MetricsAddr() string {
	if s.metrics == nil {
		return ""
	}
	return s.cfg.MetricsAddr
}

// Drain makes /readyz answer 503 from now on, so the gateway stops routing
// here before the listener closes.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.park.draining.Store(true)
}

// Shutdown stops accepting connections and waits for in-flight requests,
// parked ones included, until ctx ends; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	s.park.closeIdle()
	var errs []error
	if s.metrics != nil {
		errs = append(errs, s.metrics.Shutdown(ctx))
	}
	if err := s.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain http: %w", err), s.http.Close())
	}
	if err := s.park.wait(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain parked requests: %w", err))
	}
	return errors.Join(errs...)
}
