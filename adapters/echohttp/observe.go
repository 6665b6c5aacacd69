package echohttp

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
)

// exchange is one request as the server sees it: the ResponseWriter Echo
// writes through (so it knows the status), and everything the request's log
// line and metrics need. It is the request's only allocation of the
// server's own; the handler finds it with exchangeOf.
type exchange struct {
	http.ResponseWriter
	status  int
	id      string
	idValue [1]string // the X-Request-Id header's value slice
	start   time.Time
	method  string
	route   string // the route pattern; "" until a route matched
	outcome string
	err     error
	res     ensureuser.Result // what the use case found, for the line
	parked  bool              // a parked goroutine answers, logs and counts it
	span    trace.Span        // the server span; nil without tracing
}

// lineFields recycles the request line's fields: passed to zap, a slice of
// them would be allocated for every line (640 bytes).
var lineFields = sync.Pool{New: func() any { return new([10]zap.Field) }}

// WriteHeader records the status.
func (x *exchange) WriteHeader(code int) {
	if x.status == 0 {
		x.status = code
	}
	x.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (x *exchange) Write(b []byte) (int, error) {
	if x.status == 0 {
		x.status = http.StatusOK
	}
	return x.ResponseWriter.Write(b)
}

// Unwrap gives http.ResponseController the server's own writer (hijack,
// flush, deadlines).
func (x *exchange) Unwrap() http.ResponseWriter { return x.ResponseWriter }

// exchangeOf returns the exchange of the request c handles, or nil when c
// was not served by Server.ServeHTTP.
func exchangeOf(c echo.Context) *exchange {
	x, _ := c.Response().Writer.(*exchange)
	return x
}

// ServeHTTP is the server's outermost layer, around Echo: it settles the
// request id, enforces the size limits, lets Echo route and answer, and then
// writes the request's single log line and its metrics. It runs outside
// Echo's middleware chain because Echo composes that chain anew for every
// request, one closure per middleware.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{ResponseWriter: w, start: time.Now(), method: r.Method}
	x.id = r.Header.Get(echo.HeaderXRequestID)
	if x.id == "" || len(x.id) > maxRequestIDLen || !visibleASCII(x.id, false) {
		x.id = domain.NewRequestID()
	}
	x.idValue[0] = x.id
	w.Header()[headerRequestID] = x.idValue[:]
	r = s.startSpan(x, r)
	if err := s.checkLimits(r); err != nil {
		a := answerFor(err)
		x.outcome, x.route = a.outcome, routeOf(r)
		_ = a.write(x)
	} else {
		s.echo.ServeHTTP(x, r)
	}
	if x.parked {
		return
	}
	s.record(x)
}

// headerRequestID is X-Request-ID in net/http's canonical form.
var headerRequestID = http.CanonicalHeaderKey(echo.HeaderXRequestID)

// routeOf names the route of a request refused before routing: the
// endpoint's pattern when it is the endpoint, else unmatched.
func routeOf(r *http.Request) string {
	if r.URL.Path == RouteEnsureUser {
		return RouteEnsureUser
	}
	return ""
}

// route wraps the handler of a route, once at registration: it notes the
// route pattern for the log line and metrics, and turns a panic into a 500
// that the error handler answers and logs.
func (s *Server) route(h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		x := exchangeOf(c)
		if x != nil {
			x.route = c.Path()
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				err = fmt.Errorf("panic: %v", p)
				id := ""
				if x != nil {
					id = x.id
				}
				s.log.Error("panic in handler", zap.String("request_id", id), zap.Any("panic", p), zap.StackSkip("stack", 2))
			}
		}()
		return h(c)
	}
}

// errorHandler is Echo's error handler: it writes the answer for err (unless
// the response is already committed) and notes its outcome and error for the
// request line.
func (s *Server) errorHandler(err error, c echo.Context) {
	a := answerFor(err)
	if x := exchangeOf(c); x != nil {
		x.outcome, x.err = a.outcome, err
		if x.route == "" {
			x.route = c.Path()
		}
	}
	if c.Response().Committed {
		return
	}
	if a.status == http.StatusMethodNotAllowed {
		if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok && allow != "" {
			c.Response().Header().Set(echo.HeaderAllow, allow)
		}
	}
	if werr := a.write(c.Response()); werr != nil {
		s.log.Debug("write error answer", zap.Error(werr))
	}
}

// checkLimits enforces the header cap (431) and the body cap (413), and reads
// away a small body so the connection can be reused.
func (s *Server) checkLimits(r *http.Request) error {
	if headerBytes(r) > s.cfg.MaxHeaderBytes {
		return echo.NewHTTPError(http.StatusRequestHeaderFieldsTooLarge, "Request header fields too large.")
	}
	if r.ContentLength > maxBodyBytes {
		return errBodyTooLarge
	}
	if r.Body != nil && r.Body != http.NoBody {
		n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, maxBodyBytes+1))
		if n > maxBodyBytes {
			return errBodyTooLarge
		}
	}
	return nil
}

var errBodyTooLarge = echo.NewHTTPError(http.StatusRequestEntityTooLarge, "Request body too large: this endpoint takes no body.")

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

// Outcomes the request line treats apart.
var (
	outcomeClientGone = domain.ClientGone.String()
	outcomeBusy       = domain.Busy.String() // load shedding: not a warning
)

// record writes the one log line of a request and counts it.
func (s *Server) record(x *exchange) {
	if x.route == "" || x.status == http.StatusNotFound {
		x.route = "unmatched"
	}
	if x.status == 0 {
		x.status = http.StatusOK
	}
	if x.err != nil && x.status < 500 && x.outcome != "http_error" {
		x.err = nil
	}
	took := time.Since(x.start)
	method := boundedMethod(x.method)
	s.stats.count(x.route, method, x.status, took, traceIDOf(x.span))
	s.endSpan(x)
	if x.outcome == outcomeClientGone && x.res.Sent {
		s.reqLog.Info("client went away while waiting; the command stays sent",
			zap.String("request_id", x.id),
			zap.String("engine_request_id", x.res.RequestID),
			zap.String("user_id", x.res.UserID))
	}
	if x.route != RouteEnsureUser && x.status < 400 {
		return // probes and scrapes are not worth a line each
	}
	level := zapcore.InfoLevel
	if x.status >= 500 && x.outcome != outcomeBusy {
		level = zapcore.WarnLevel
	}
	if x.status == http.StatusInternalServerError {
		level = zapcore.ErrorLevel
	}
	ce := s.reqLog.Check(level, "request")
	if ce == nil {
		return
	}
	fs := lineFields.Get().(*[10]zap.Field)
	defer lineFields.Put(fs)
	f := append(fs[:0],
		zap.String("request_id", x.id),
		zap.String("method", method),
		zap.String("route", x.route),
		zap.Int("status", x.status),
		zap.Duration("latency", took),
	)
	if x.outcome != "" {
		f = append(f, zap.String("outcome", x.outcome))
	}
	if x.res.UserID != "" {
		f = append(f, zap.String("user_id", x.res.UserID))
	}
	if x.res.RequestID != "" {
		f = append(f, zap.String("engine_request_id", x.res.RequestID))
	}
	if x.err != nil {
		f = append(f, zap.Error(x.err))
	}
	ce.Write(f...)
	clear(f) // drop the strings and the error before the array goes back
}

// boundedMethod keeps the method label's values bounded whatever clients
// send.
func boundedMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodHead, http.MethodOptions, http.MethodPut,
		http.MethodDelete, http.MethodPatch:
		return m
	}
	return "OTHER"
}

// httpMetrics are the request counter and latency histogram, with the
// children of the label values seen so far kept at hand: resolving a child
// hashes its labels under the vector's lock, once per request otherwise.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	mu       sync.RWMutex
	counters map[requestKey]prometheus.Counter
	latency  map[string]prometheus.Observer
}

type requestKey struct {
	route, method string
	status        int
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ensure_user_http_requests_total",
			Help: "HTTP requests by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ensure_user_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		counters: map[requestKey]prometheus.Counter{},
		latency:  map[string]prometheus.Observer{},
	}
}

// count counts one request. Route and method are bounded label values (route
// patterns, known methods), so the maps stay small.
// A sampled request's trace id becomes the latency observation's exemplar,
// so that a slow bucket links to a trace.
func (m *httpMetrics) count(route, method string, status int, took time.Duration, traceID string) {
	k := requestKey{route, method, status}
	m.mu.RLock()
	c, okC := m.counters[k]
	o, okO := m.latency[route]
	m.mu.RUnlock()
	if !okC || !okO {
		m.mu.Lock()
		if c, okC = m.counters[k]; !okC {
			c = m.requests.WithLabelValues(route, method, strconv.Itoa(status))
			m.counters[k] = c
		}
		if o, okO = m.latency[route]; !okO {
			o = m.duration.WithLabelValues(route)
			m.latency[route] = o
		}
		m.mu.Unlock()
	}
	c.Inc()
	if traceID != "" {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(took.Seconds(), prometheus.Labels{"trace_id": traceID})
			return
		}
	}
	o.Observe(took.Seconds())
}
