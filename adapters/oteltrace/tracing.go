// Package oteltrace sets up OpenTelemetry tracing from the standard OTEL_*
// variables: an OTLP exporter (gRPC or HTTP/protobuf) behind a bounded
// batch span processor, the W3C propagators, and Prometheus counters of what
// is lost. Both binaries use it: the service through its config package, the
// reference Engine (engine-sim) directly.
//
// # Off by default
//
// Without OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT), or with
// OTEL_SDK_DISABLED=true, New returns the no-op TracerProvider: no exporter,
// no goroutine, and a span costs a context and an interface call, so the
// instrumented hot path pays nothing measurable.
//
// # A collector that is down
//
// Ending a span never blocks and never fails: the span joins a queue of
// OTEL_BSP_MAX_QUEUE_SIZE spans (2048), or is dropped and counted when the
// queue is full. One goroutine exports the queue in batches; an export that
// fails after the exporter's retries (within OTEL_EXPORTER_OTLP_TIMEOUT)
// loses its batch, counted too, and is logged at most once a minute.
//
// # Metrics
//
// Registered on the Registerer given to New when tracing is enabled:
//
//	ensure_user_trace_spans_dropped_total{reason="queue_full|export_failed"}
//	ensure_user_trace_exports_total{result="ok|error"}
//
// The names are the same in engine-sim, whose other series are engine_sim_*:
// one dashboard reads both binaries, told apart by their job.
//
// # What New does not do
//
// It sets no OpenTelemetry global (otel.SetTracerProvider, the error
// handler, the global propagator): callers pass TracerProvider and
// Propagator explicitly, so that tests run side by side and nothing depends
// on start-up order.
package oteltrace

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/internal/buildinfo"
)

// Tracing is the tracing of one process: the provider its tracers come
// from and the propagator of trace context across processes. A nil
// *Tracing is tracing off. Its methods are safe for concurrent use.
type Tracing struct {
	provider trace.TracerProvider
	enabled  bool
}

// New returns the tracing cfg describes, and a cleanup that flushes the
// spans still queued and shuts the exporter down, within its ctx's bound
// (spans still queued when ctx ends are lost). ctx bounds New itself, which
// opens no connection: the exporter connects at its first export, so a
// collector that is down at start costs nothing but dropped spans.
//
// When cfg is not Enabled, the Tracing's provider is the no-op one and
// cleanup does nothing. Otherwise New registers the metrics of the package
// doc on reg (nil: none) and fails when they are already registered, or
// when cfg is invalid.
func New(ctx context.Context, cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Tracing, func(context.Context) error, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("oteltrace: %w", err)
	}
	log = log.Named("oteltrace")
	if !cfg.Enabled() {
		log.Debug("tracing off", zap.Bool("disabled", cfg.Disabled))
		return &Tracing{provider: noop.NewTracerProvider()}, func(context.Context) error { return nil }, nil
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, nil, fmt.Errorf("oteltrace: %w", err)
	}
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("oteltrace: resource: %w", err)
	}
	otlp, err := newOTLPExporter(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("oteltrace: exporter: %w", err)
	}
	adm := &admission{limit: int64(cfg.maxQueueSize()), dropped: m.dropped[DropQueueFull]}
	exp := &exporter{next: otlp, timeout: cfg.timeout(), adm: adm, metrics: m, log: &failureLog{log: log, now: time.Now}}
	adm.next = sdktrace.NewBatchSpanProcessor(exp,
		sdktrace.WithMaxQueueSize(cfg.maxQueueSize()+flushMargin),
		sdktrace.WithMaxExportBatchSize(cfg.maxExportBatchSize()),
		sdktrace.WithBatchTimeout(cfg.scheduleDelay()),
		sdktrace.WithExportTimeout(cfg.exportTimeout()),
	)
	sampler, err := cfg.newSampler()
	if err != nil {
		return nil, nil, fmt.Errorf("oteltrace: %w", err) // Validate refused it already
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(res),
		sdktrace.WithSpanProcessor(adm),
	)
	log.Info("tracing on", zap.String("endpoint", cfg.RedactedEndpoint()), zap.String("protocol", cfg.protocol()),
		zap.String("service", cfg.ServiceName), zap.String("sampler", cfg.sampler()))
	cleanup := func(ctx context.Context) error {
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("oteltrace: shutdown: %w", err)
		}
		log.Debug("tracing stopped")
		return nil
	}
	return &Tracing{provider: tp, enabled: true}, cleanup, nil
}

// TracerProvider returns the provider spans are created from: the SDK's, or
// the no-op provider when tracing is off.
func (t *Tracing) TracerProvider() trace.TracerProvider {
	if t == nil {
		return noop.NewTracerProvider()
	}
	return t.provider
}

// Tracer returns the provider's tracer for the instrumentation scope name,
// conventionally the instrumented package's import path.
func (t *Tracing) Tracer(name string) trace.Tracer {
	return t.TracerProvider().Tracer(name, trace.WithInstrumentationVersion(buildinfo.Read().Version))
}

// Propagator returns the W3C Trace Context and Baggage propagator: what the
// service reads from and writes to HTTP headers, and carries to the Engine
// in the command's traceparent and tracestate. It is the same whether or not
// tracing is on: a process that records nothing still passes its caller's
// trace context on.
func (t *Tracing) Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Enabled reports whether spans are exported. Instrumentation should still
// rely on span.IsRecording() to skip building attributes, which also covers
// the spans the sampler leaves out.
func (t *Tracing) Enabled() bool { return t != nil && t.enabled }

// newResource describes this process: OTEL_RESOURCE_ATTRIBUTES, the
// telemetry SDK, the host, service.version from the build (unless the
// attributes set one), and service.name, which always wins.
func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	attrs := make([]attribute.KeyValue, 0, len(cfg.ResourceAttributes)+2)
	attrs = append(attrs, semconv.ServiceVersion(buildinfo.Read().Version))
	for _, k := range sortedKeys(cfg.ResourceAttributes) {
		attrs = append(attrs, attribute.String(k, cfg.ResourceAttributes[k]))
	}
	attrs = append(attrs, semconv.ServiceName(cfg.ServiceName))
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(attrs...), // last: the operator's word wins over the detectors'
	)
	if errors.Is(err, resource.ErrPartialResource) {
		return res, nil // a detector failed (no hostname): the rest is still worth sending
	}
	return res, err
}

// newOTLPExporter returns the exporter of cfg's protocol. Every setting the
// variables carry is passed explicitly, so the exporter's own reading of the
// environment decides only the TLS files.
func newOTLPExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	headers := map[string]string(cfg.Headers)
	if headers == nil {
		headers = map[string]string{} // replaces any the exporter read from the environment
	}
	gzip := cfg.Compression == "gzip"
	if cfg.protocol() == ProtocolGRPC {
		opts := []otlptracegrpc.Option{
			otlptracegrpc.WithEndpointURL(cfg.Endpoint),
			otlptracegrpc.WithHeaders(headers),
			otlptracegrpc.WithTimeout(cfg.timeout()),
		}
		if gzip {
			opts = append(opts, otlptracegrpc.WithCompressor("gzip"))
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	compression := otlptracehttp.NoCompression
	if gzip {
		compression = otlptracehttp.GzipCompression
	}
	return otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(cfg.Endpoint),
		otlptracehttp.WithHeaders(headers),
		otlptracehttp.WithTimeout(cfg.timeout()),
		otlptracehttp.WithCompression(compression),
	)
}

// newSampler returns the sampler of OTEL_TRACES_SAMPLER.
func (c Config) newSampler() (sdktrace.Sampler, error) {
	ratio, err := c.ratio()
	switch s := c.sampler(); s {
	case SamplerAlwaysOn:
		return sdktrace.AlwaysSample(), nil
	case SamplerAlwaysOff:
		return sdktrace.NeverSample(), nil
	case SamplerParentBasedAlwaysOn:
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case SamplerParentBasedAlwaysOff:
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case SamplerTraceIDRatio, SamplerParentBasedTraceIDRatio:
		if err != nil {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: %w", err)
		}
		if s == SamplerTraceIDRatio {
			return sdktrace.TraceIDRatioBased(ratio), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_SAMPLER: %q is unknown", s)
	}
}
