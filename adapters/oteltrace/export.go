package oteltrace

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
)

// Reasons a span is dropped, the reason label of
// ensure_user_trace_spans_dropped_total.
const (
	DropQueueFull    = "queue_full"    // ended while OTEL_BSP_MAX_QUEUE_SIZE spans waited for export
	DropExportFailed = "export_failed" // in an export the collector refused or never answered
)

// Results of an export, the result label of ensure_user_trace_exports_total.
const (
	ExportOK    = "ok"
	ExportError = "error"
)

// failureLogInterval is the least time between two logs of failed exports:
// a collector that is down fails every export, and one line a minute says
// so as well as thousands would.
const failureLogInterval = time.Minute

// flushMargin is added to the batch processor's queue beyond the limit
// admission enforces, so that the markers ForceFlush puts in that queue can
// never make it drop a span admission let through (which would leak the
// span's place in the count).
const flushMargin = 16

// metrics are the adapter's Prometheus series.
type metrics struct {
	dropped map[string]prometheus.Counter // by reason
	exports map[string]prometheus.Counter // by result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ensure_user", Subsystem: "trace", Name: "spans_dropped_total",
		Help: "Spans lost before reaching the collector, by reason.",
	}, []string{"reason"})
	exports := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ensure_user", Subsystem: "trace", Name: "exports_total",
		Help: "Batches of spans sent to the OTLP collector, by result.",
	}, []string{"result"})
	if reg != nil {
		for _, c := range []prometheus.Collector{dropped, exports} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	m := &metrics{dropped: map[string]prometheus.Counter{}, exports: map[string]prometheus.Counter{}}
	for _, r := range []string{DropQueueFull, DropExportFailed} {
		m.dropped[r] = dropped.WithLabelValues(r)
	}
	for _, r := range []string{ExportOK, ExportError} {
		m.exports[r] = exports.WithLabelValues(r)
	}
	return m, nil
}

// admission sits in front of the SDK's batch span processor and bounds the
// spans it holds (queued, batched or being exported) to limit. The batch
// processor already drops what its queue cannot take without blocking, but
// does not say so anywhere Prometheus can read; admission drops those spans
// itself, first, and counts them. The processor's queue is sized above
// limit, so it never drops one on its own.
type admission struct {
	next    sdktrace.SpanProcessor
	limit   int64
	held    atomic.Int64 // spans handed to next and not yet back from an export
	dropped prometheus.Counter
}

var _ sdktrace.SpanProcessor = (*admission)(nil)

// OnStart passes the span on: only ended spans are queued.
func (a *admission) OnStart(ctx context.Context, s sdktrace.ReadWriteSpan) { a.next.OnStart(ctx, s) }

// OnEnd hands the span to the batch processor, or drops and counts it when
// limit spans are held. It never blocks.
func (a *admission) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return // recorded but not sampled: the batch processor would ignore it
	}
	if a.held.Add(1) > a.limit {
		a.held.Add(-1)
		a.dropped.Inc()
		return
	}
	a.next.OnEnd(s)
}

// released returns n spans' places, once their export is over.
func (a *admission) released(n int) { a.held.Add(-int64(n)) }

// Shutdown flushes and stops the batch processor.
func (a *admission) Shutdown(ctx context.Context) error { return a.next.Shutdown(ctx) }

// ForceFlush exports what the batch processor holds.
func (a *admission) ForceFlush(ctx context.Context) error { return a.next.ForceFlush(ctx) }

// exporter wraps the OTLP exporter to count exports and the spans failed
// ones lose, and to log failures at most once a minute. It reports success
// to the batch processor in every case: the processor would only hand the
// error to OpenTelemetry's global handler, which prints a line per failed
// export on stderr, outside zap.
type exporter struct {
	next    sdktrace.SpanExporter
	timeout time.Duration // OTEL_EXPORTER_OTLP_TIMEOUT
	adm     *admission
	metrics *metrics
	log     *failureLog
}

var _ sdktrace.SpanExporter = (*exporter)(nil)

// ExportSpans sends spans through the OTLP exporter, which retries
// retryable failures; what still fails after OTEL_EXPORTER_OTLP_TIMEOUT is
// lost. The timeout is applied here, to the whole export: the HTTP exporter
// applies it to each attempt only, and would retry a collector that never
// answers for up to a minute while the queue behind it overflows.
func (e *exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	err := e.next.ExportSpans(ctx, spans)
	cancel()
	e.adm.released(len(spans))
	if err != nil {
		e.metrics.exports[ExportError].Inc()
		e.metrics.dropped[DropExportFailed].Add(float64(len(spans)))
		e.log.failed(err, len(spans))
		return nil
	}
	e.metrics.exports[ExportOK].Inc()
	e.log.succeeded()
	return nil
}

// Shutdown shuts the OTLP exporter down, closing its connections.
func (e *exporter) Shutdown(ctx context.Context) error { return e.next.Shutdown(ctx) }

// failureLog logs failed exports at most once per failureLogInterval, with
// how many failed since the last line, and once when exports succeed again.
// It is safe for concurrent use.
type failureLog struct {
	log *zap.Logger
	now func() time.Time

	mu       sync.Mutex
	next     time.Time // earliest time of the next failure line
	failures int       // failed exports not logged yet
	spans    int       // spans they lost
	failing  bool      // the last export failed
}

func (f *failureLog) failed(err error, spans int) {
	f.mu.Lock()
	f.failing = true
	f.failures++
	f.spans += spans
	now := f.now()
	if now.Before(f.next) {
		f.mu.Unlock()
		return
	}
	failures, lost := f.failures, f.spans
	f.failures, f.spans = 0, 0
	f.next = now.Add(failureLogInterval)
	f.mu.Unlock()
	f.log.Warn("trace export failed: spans dropped (logged at most once a minute)",
		zap.Error(err), zap.Int("failed_exports", failures), zap.Int("dropped_spans", lost))
}

func (f *failureLog) succeeded() {
	f.mu.Lock()
	was, failures, lost := f.failing, f.failures, f.spans
	f.failing, f.failures, f.spans = false, 0, 0
	f.mu.Unlock()
	if was {
		f.log.Info("trace export succeeds again",
			zap.Int("failed_exports_not_logged", failures), zap.Int("dropped_spans_not_logged", lost))
	}
}
