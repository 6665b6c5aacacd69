// Package echohttp is the HTTP adapter: an Echo server exposing
// POST /api/v1/auth/ensure-user, the operations endpoints (/livez, /readyz,
// /metrics, /openapi.yaml), and one error handler that turns every error into
// the JSON answer of the contract.
package echohttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ensure-user/ensure-user/config"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/requestid"
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

// Probe is one readiness check, named in /readyz's answer when it fails.
type Probe struct {
	Name  string
	Check func(ctx context.Context) error
}

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
}

// Server serves the HTTP API. Create it with New; it is safe for concurrent
// use.
type Server struct {
	cfg      config.HTTP
	log      *zap.Logger
	reqLog   *zap.Logger // the request lines: without the caller, which is always emit
	uc       EnsureUser
	opts     Options
	echo     *echo.Echo
	http     *http.Server
	metrics  *http.Server // nil unless cfg.MetricsAddr is set
	draining atomic.Bool
	inflight atomic.Int64 // ensure-user requests being handled, parked or not
	park     parking
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	parks    prometheus.Counter
}

// New builds the server; it listens only when Serve is called.
func New(cfg config.HTTP, log *zap.Logger, uc EnsureUser, opts Options) (*Server, error) {
	s := &Server{cfg: cfg, log: log.Named("http"), uc: uc, opts: opts}
	// Finding the caller walks the stack (about 1.5 us a line); for the
	// request line it would always name emit.
	s.reqLog = s.log.WithOptions(zap.WithCaller(false))
	s.park.conns = map[net.Conn]bool{}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ensure_user_http_requests_total",
		Help: "HTTP requests by route pattern, method and status.",
	}, []string{"route", "method", "status"})
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ensure_user_http_request_duration_seconds",
		Help:    "HTTP request latency by route pattern.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route"})
	s.parks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ensure_user_http_parked_total",
		Help: "Requests whose wait for the Engine went on parked (HTTP_PARK_ABOVE).",
	})
	parkedNow := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ensure_user_http_parked_connections",
		Help: "Parked connections now: waiting for the Engine's answer, or for the client's next request.",
	}, func() float64 { return float64(s.parkedConns()) })
	if opts.Registry != nil {
		for _, c := range []prometheus.Collector{s.requests, s.duration, s.parks, parkedNow} {
			if err := opts.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register http metrics: %w", err)
			}
		}
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = func(err error, c echo.Context) { s.writeError(err, c) }
	e.Use(s.observe, s.limits)
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
		e.OPTIONS(RouteEnsureUser, methodNotAllowed)
	}
	e.POST(RouteEnsureUser, s.ensureUser)
	e.GET(RouteLive, s.live)
	e.GET(RouteReady, s.ready)
	if opts.Registry != nil && cfg.MetricsAddr == "" {
		e.GET(RouteMetrics, echo.WrapHandler(s.metricsHandler()))
	}
	if opts.OpenAPI != nil {
		e.GET(RouteOpenAPI, s.openAPI)
	}
	s.echo = e

	hdr := cfg.ReadHeaderTimeout
	if hdr <= 0 {
		hdr = DefaultReadHeaderTimeout
	}
	s.http = &http.Server{
		Addr:    cfg.Addr,
		Handler: e,
		// Headers must arrive quickly (slowloris); the whole request, which
		// has no body, too. Writing may wait for the Engine's reply.
		ReadHeaderTimeout: hdr,
		ReadTimeout:       hdr + 5*time.Second,
		WriteTimeout:      opts.ReplyTimeout + 10*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    netHTTPHeaderCap,
		ErrorLog:          zap.NewStdLog(s.log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))),
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
func (s *Server) Handler() http.Handler { return s.echo }

// Serve accepts connections on ln (and, when configured, on the metrics
// listener mln) until Shutdown. It returns nil after a clean shutdown.
func (s *Server) Serve(ln, mln net.Listener) error {
	errc := make(chan error, 2)
	pl := newParkListener(ln)
	s.park.ln = pl
	go func() { errc <- s.http.Serve(pl) }()
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
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting connections and waits for in-flight requests,
// parked ones included, until ctx ends; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	s.closeIdleParked()
	var errs []error
	if s.metrics != nil {
		errs = append(errs, s.metrics.Shutdown(ctx))
	}
	if err := s.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain http: %w", err), s.http.Close())
	}
	if err := s.waitParked(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain parked requests: %w", err))
	}
	return errors.Join(errs...)
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{
		ErrorLog:          zap.NewStdLog(s.log),
		EnableOpenMetrics: true,
	})
}

func (s *Server) live(c echo.Context) error {
	return answer{status: http.StatusOK, body: []byte(`{"status":"ok"}`)}.write(c)
}

// notReady lists what is not ready: the failing probes, and the server
// itself while draining.
func (s *Server) notReady(ctx context.Context) []probeFailure {
	var out []probeFailure
	if s.draining.Load() {
		out = append(out, probeFailure{"server", "shutting down"})
	}
	for _, p := range s.opts.Probes {
		if err := p.Check(ctx); err != nil {
			out = append(out, probeFailure{p.Name, err.Error()})
		}
	}
	return out
}

type probeFailure struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

// Ready reports nil when every probe passes, else an error naming what is
// not ready; it is what /readyz answers.
func (s *Server) Ready(ctx context.Context) error {
	var errs []error
	for _, f := range s.notReady(ctx) {
		errs = append(errs, fmt.Errorf("%s: %s", f.Name, f.Error))
	}
	return errors.Join(errs...)
}

// ready answers 200 when every probe passes, else 503 naming what is not
// ready. While draining it is 503 whatever the probes say.
func (s *Server) ready(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	body := struct {
		Status   string         `json:"status"`
		NotReady []probeFailure `json:"not_ready,omitempty"`
	}{Status: "ready", NotReady: s.notReady(ctx)}
	status := http.StatusOK
	if len(body.NotReady) > 0 {
		status, body.Status = http.StatusServiceUnavailable, "not ready"
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(status, body)
}

func (s *Server) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", s.opts.OpenAPI)
}

func methodNotAllowed(echo.Context) error { return echo.ErrMethodNotAllowed }

// observe is the outermost middleware: it settles the request id, turns
// panics into 500s, hands errors to the error handler, and then writes the
// request's single log line and its metrics.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		start := time.Now()
		req := c.Request()
		id := req.Header.Get(echo.HeaderXRequestID)
		if id == "" || len(id) > maxRequestIDLen || !visibleASCII(id, false) {
			id = domain.NewRequestID()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		c.Set(keyRequestID, id)
		c.Set(keyStart, start)
		c.SetRequest(req.WithContext(requestid.With(req.Context(), id)))

		func() {
			defer func() {
				if p := recover(); p != nil {
					if p == http.ErrAbortHandler {
						panic(p)
					}
					err = fmt.Errorf("panic: %v", p)
					s.log.Error("panic in handler", zap.String("request_id", id), zap.Any("panic", p), zap.StackSkip("stack", 2))
				}
			}()
			err = next(c)
		}()
		if err == errParked {
			return nil // the parked goroutine answers, logs and counts it
		}
		outcome := ""
		if err != nil {
			outcome = s.writeError(err, c)
		} else if st := c.Response().Status; st == http.StatusOK {
			outcome = ansConfirmed.outcome
		} else if st == http.StatusAccepted {
			outcome = ansInitiated.outcome
		}
		s.record(c, id, start, outcome, err)
		return nil
	}
}

// writeError writes the answer for err (unless the response is already
// committed) and returns the answer's outcome name.
func (s *Server) writeError(err error, c echo.Context) string {
	a := answerFor(err)
	if c.Response().Committed {
		return a.outcome
	}
	if a.status == http.StatusMethodNotAllowed {
		if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok && allow != "" {
			c.Response().Header().Set(echo.HeaderAllow, allow)
		}
	}
	if werr := a.write(c); werr != nil {
		s.log.Debug("write error answer", zap.Error(werr))
	}
	return a.outcome
}

// reqLine is what the one log line and the metrics of a request say.
type reqLine struct {
	id              string
	start           time.Time
	method, route   string
	status          int
	outcome         string
	userID          string
	engineRequestID string
	err             error
}

// record writes the one log line of a request and counts it.
func (s *Server) record(c echo.Context, id string, start time.Time, outcome string, err error) {
	l := reqLine{id: id, start: start, method: c.Request().Method, route: c.Path(),
		status: c.Response().Status, outcome: outcome, err: err}
	if l.route == "" || l.status == http.StatusNotFound {
		l.route = "unmatched"
	}
	l.userID, _ = c.Get(keyUserID).(string)
	l.engineRequestID, _ = c.Get(keyEngineRequestID).(string)
	if outcome == ansClientGone.outcome {
		l.status = ansClientGone.status
	}
	if l.err != nil && l.status < 500 && outcome != "http_error" {
		l.err = nil
	}
	s.emit(l)
}

// emit writes l's log line and counts it.
func (s *Server) emit(l reqLine) {
	took := time.Since(l.start)
	method := l.method
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodHead, http.MethodOptions, http.MethodPut,
		http.MethodDelete, http.MethodPatch:
	default:
		method = "OTHER" // bounded label values whatever clients send
	}
	s.requests.WithLabelValues(l.route, method, strconv.Itoa(l.status)).Inc()
	s.duration.WithLabelValues(l.route).Observe(took.Seconds())

	if l.route != RouteEnsureUser && l.status < 400 {
		return // probes and scrapes are not worth a line each
	}
	level := zapcore.InfoLevel
	if l.status >= 500 && l.outcome != ansBusy.outcome {
		level = zapcore.WarnLevel
	}
	if l.status == http.StatusInternalServerError {
		level = zapcore.ErrorLevel
	}
	ce := s.reqLog.Check(level, "request")
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, 9)
	fields = append(fields,
		zap.String("request_id", l.id),
		zap.String("method", method),
		zap.String("route", l.route),
		zap.Int("status", l.status),
		zap.Duration("latency", took),
	)
	if l.outcome != "" {
		fields = append(fields, zap.String("outcome", l.outcome))
	}
	if l.userID != "" {
		fields = append(fields, zap.String("user_id", l.userID))
	}
	if l.engineRequestID != "" {
		fields = append(fields, zap.String("engine_request_id", l.engineRequestID))
	}
	if l.err != nil {
		fields = append(fields, zap.Error(l.err))
	}
	ce.Write(fields...)
}

// limits enforces the header cap (431) and the body cap (413) in JSON, and
// reads away a small body so the connection can be reused.
func (s *Server) limits(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if headerBytes(req) > s.cfg.MaxHeaderBytes {
			return echo.NewHTTPError(http.StatusRequestHeaderFieldsTooLarge, "Request header fields too large.")
		}
		if req.ContentLength > maxBodyBytes {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "Request body too large: this endpoint takes no body.")
		}
		if req.Body != nil && req.Body != http.NoBody {
			n, _ := io.Copy(io.Discard, io.LimitReader(req.Body, maxBodyBytes+1))
			if n > maxBodyBytes {
				return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "Request body too large: this endpoint takes no body.")
			}
		}
		return next(c)
	}
}

// headerBytes approximates the size of the request head as sent: request
// line plus "Name: value\r\n" per header.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + 12 + len(r.Host) + 8
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}
