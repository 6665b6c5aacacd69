package oteltrace

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ensure-user/ensure-user/test/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// start builds the tracing of env (service name "test-svc") on a fresh
// registry, and shuts it down at cleanup if the test did not.
func start(t *testing.T, env map[string]string, log *zap.Logger) (*Tracing, func(context.Context) error, *prometheus.Registry) {
	t.Helper()
	cfg, err := ConfigFromEnv(lookup(env), "test-svc")
	if err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	reg := prometheus.NewRegistry()
	tr, cleanup, err := New(testContext(t), cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	once := sync.OnceValue(func() error { return cleanup(testContext(t)) })
	t.Cleanup(func() { _ = once() })
	return tr, func(context.Context) error { return once() }, reg
}

// TestOffByDefault: with no endpoint, New starts nothing and every span is
// the no-op one. Not parallel, so that no other test's goroutine comes or
// goes while it counts.
func TestOffByDefault(t *testing.T) {
	for _, env := range []map[string]string{
		nil,
		{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
	} {
		before := goleak.IgnoreCurrent()
		reg := prometheus.NewRegistry()
		cfg, err := ConfigFromEnv(lookup(env), "test-svc")
		if err != nil {
			t.Fatal(err)
		}
		tr, cleanup, err := New(context.Background(), cfg, zap.NewNop(), reg)
		if err != nil {
			t.Fatal(err)
		}
		_, span := tr.Tracer("test").Start(context.Background(), "op")
		span.SetAttributes(attribute.String("k", "v"))
		span.End()
		if span.IsRecording() || tr.Enabled() {
			t.Errorf("env %v: a span records, or tracing says it is on", env)
		}
		if err := goleak.Find(before); err != nil {
			t.Errorf("env %v: tracing off started goroutines: %v", env, err)
		}
		if mfs, _ := reg.Gather(); len(mfs) != 0 {
			t.Errorf("env %v: tracing off registered %d metrics", env, len(mfs))
		}
		if err := cleanup(context.Background()); err != nil {
			t.Error(err)
		}
	}
	var none *Tracing
	if none.Enabled() || none.TracerProvider() == nil || none.Propagator() == nil {
		t.Error("a nil *Tracing is not tracing off")
	}
}

// TestExports sends spans to a real OTLP receiver on every protocol and
// compression, and finds them decoded with their resource.
func TestExports(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		protocol string
		gzip     bool
	}{
		{"http", ProtocolHTTPProtobuf, false},
		{"http gzip", ProtocolHTTPProtobuf, true},
		{"grpc", ProtocolGRPC, false},
		{"grpc gzip", ProtocolGRPC, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			recv := testenv.StartOTLPReceiver(t)
			env := map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": recv.Endpoint(),
				"OTEL_RESOURCE_ATTRIBUTES":    "deployment.environment.name=test,service.version=9.9.9",
				"OTEL_EXPORTER_OTLP_HEADERS":  "x-tenant=acme",
			}
			if tc.protocol == ProtocolGRPC {
				env["OTEL_EXPORTER_OTLP_ENDPOINT"] = recv.GRPCEndpoint()
				env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
			}
			if tc.gzip {
				env["OTEL_EXPORTER_OTLP_COMPRESSION"] = "gzip"
			}
			tr, cleanup, reg := start(t, env, nil)
			if !tr.Enabled() {
				t.Fatal("tracing is off")
			}
			ctx, parent := tr.Tracer("test").Start(context.Background(), "parent", trace.WithSpanKind(trace.SpanKindServer))
			_, child := tr.Tracer("test").Start(ctx, "child")
			child.SetAttributes(attribute.Int("n", 7))
			child.End()
			parent.End()
			if err := cleanup(testContext(t)); err != nil { // flushes
				t.Fatal(err)
			}
			spans, err := recv.WaitSpans(testContext(t), func(s []testenv.ReceivedSpan) bool { return len(s) >= 2 })
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]testenv.ReceivedSpan{}
			for _, s := range spans {
				byName[s.Name] = s
			}
			p, c := byName["parent"], byName["child"]
			if p.Service != "test-svc" || p.Resource["deployment.environment.name"] != "test" || p.Resource["service.version"] != "9.9.9" {
				t.Errorf("resource %v", p.Resource)
			}
			if c.TraceID != p.TraceID || c.ParentSpanID != p.SpanID || p.ParentSpanID != "" || c.Attributes["n"] != int64(7) || p.Kind != trace.SpanKindServer {
				t.Errorf("spans %+v\n%+v", p, c)
			}
			if got := recv.Header("x-tenant"); got != "acme" {
				t.Errorf("header x-tenant %q, want acme", got)
			}
			if n := testenv.Metric(t, reg, "ensure_user_trace_exports_total", "result", ExportOK); n < 1 {
				t.Errorf("exports ok %v", n)
			}
		})
	}
}

// TestServiceVersionFromBuild: without OTEL_RESOURCE_ATTRIBUTES the
// resource still says which build sent the spans.
func TestServiceVersionFromBuild(t *testing.T) {
	t.Parallel()
	recv := testenv.StartOTLPReceiver(t)
	tr, cleanup, _ := start(t, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": recv.TracesEndpoint()}, nil)
	_, span := tr.Tracer("test").Start(context.Background(), "op")
	span.End()
	if err := cleanup(testContext(t)); err != nil {
		t.Fatal(err)
	}
	spans, err := recv.WaitSpans(testContext(t), func(s []testenv.ReceivedSpan) bool { return len(s) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := spans[0].Resource["service.version"].(string); v == "" || spans[0].Service != "test-svc" {
		t.Errorf("resource %v", spans[0].Resource)
	}
}

// TestCollectorDown: with the collector's port closed, or a collector that
// never answers, ending spans never blocks; what cannot wait is dropped,
// and the drops and failed exports are counted and logged once.
func TestCollectorDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	_ = ln.Close()

	release := make(chan struct{})
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(stalled.Close)
	t.Cleanup(func() { close(release) }) // runs before stalled.Close

	for _, tc := range []struct{ name, endpoint string }{{"closed port", closed}, {"stalled", stalled.URL}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zapcore.InfoLevel)
			tr, cleanup, reg := start(t, map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":    tc.endpoint,
				"OTEL_EXPORTER_OTLP_TIMEOUT":     "300",
				"OTEL_BSP_MAX_QUEUE_SIZE":        "8",
				"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4",
				"OTEL_BSP_SCHEDULE_DELAY":        "10",
			}, zap.New(core))

			// 2,000 spans, each ended at once: the loop must finish well
			// within the test's bound whatever the collector does.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				tracer := tr.Tracer("test")
				for range 2000 {
					_, span := tracer.Start(context.Background(), "op")
					span.End()
				}
			}()
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatal("ending spans blocked while the collector is down")
			}
			if n := testenv.Metric(t, reg, "ensure_user_trace_spans_dropped_total", "reason", DropQueueFull); n < 1 {
				t.Errorf("no span counted as dropped for a full queue")
			}
			// The shutdown flushes what is queued, through failing exports,
			// within its bound.
			_ = cleanup(testContext(t))
			if n := testenv.Metric(t, reg, "ensure_user_trace_exports_total", "result", ExportError); n < 1 {
				t.Errorf("no failed export counted")
			}
			if n := testenv.Metric(t, reg, "ensure_user_trace_spans_dropped_total", "reason", DropExportFailed); n < 1 {
				t.Errorf("no span counted as lost in a failed export")
			}
			if n := logs.FilterMessageSnippet("trace export failed").Len(); n != 1 {
				t.Errorf("%d lines logged for failed exports within a minute, want 1", n)
			}
		})
	}
}

// TestCollectorRefusesThenRecovers: a collector answering 500 costs the
// spans of those exports, counted; once it accepts again spans flow, and
// the recovery is logged.
func TestCollectorRefusesThenRecovers(t *testing.T) {
	t.Parallel()
	recv := testenv.StartOTLPReceiver(t)
	recv.Fail(http.StatusInternalServerError) // not retryable: fails at once
	core, logs := observer.New(zapcore.InfoLevel)
	tr, cleanup, reg := start(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": recv.Endpoint(),
		"OTEL_BSP_SCHEDULE_DELAY":     "10",
	}, zap.New(core))
	tracer := tr.Tracer("test")
	_, span := tracer.Start(context.Background(), "lost")
	span.End()
	testenv.Eventually(t, 10*time.Second, "a refused export", func() bool { return recv.Refused() > 0 })
	testenv.Eventually(t, 10*time.Second, "the failure counted", func() bool {
		return testenv.Metric(t, reg, "ensure_user_trace_spans_dropped_total", "reason", DropExportFailed) == 1
	})
	recv.Fail(0)
	_, span = tracer.Start(context.Background(), "kept")
	span.End()
	spans, err := recv.WaitSpans(testContext(t), func(s []testenv.ReceivedSpan) bool { return len(s) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 1 || spans[0].Name != "kept" {
		t.Errorf("received %+v, want the span after the recovery only", spans)
	}
	if err := cleanup(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessage("trace export succeeds again").Len() != 1 {
		t.Errorf("the recovery was not logged once: %v", logs.All())
	}
}

// TestFailureLogOncePerMinute drives the rate limit with a fake clock.
func TestFailureLogOncePerMinute(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f := &failureLog{log: zap.New(core), now: func() time.Time { return now }}
	for _, step := range []time.Duration{0, time.Second, 58 * time.Second, 2 * time.Second} {
		now = now.Add(step)
		f.failed(net.ErrClosed, 10)
	}
	lines := logs.FilterMessageSnippet("trace export failed").All()
	if len(lines) != 2 {
		t.Fatalf("%d lines for 4 failures over 61 s, want 2", len(lines))
	}
	if got := lines[1].ContextMap()["failed_exports"]; got != int64(3) {
		t.Errorf("second line counts %v failures, want the 3 since the first", got)
	}
}

func TestSampler(t *testing.T) {
	t.Parallel()
	sampledParent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	unsampledParent := sampledParent.WithTraceFlags(0)
	for _, tc := range []struct {
		sampler, arg                      string
		root, underSampled, underUnsample bool
	}{
		{"", "", true, true, false}, // parentbased_always_on
		{SamplerAlwaysOn, "", true, true, true},
		{SamplerAlwaysOff, "", false, false, false},
		{SamplerParentBasedAlwaysOff, "", false, true, false},
		{SamplerTraceIDRatio, "0", false, false, false},
		{SamplerTraceIDRatio, "", true, true, true},
		{SamplerParentBasedTraceIDRatio, "0", false, true, false},
	} {
		s, err := (Config{Sampler: tc.sampler, SamplerArg: tc.arg}).newSampler()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			parent trace.SpanContext
			want   bool
		}{{trace.SpanContext{}, tc.root}, {sampledParent, tc.underSampled}, {unsampledParent, tc.underUnsample}} {
			ctx := trace.ContextWithRemoteSpanContext(context.Background(), c.parent)
			got := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: trace.TraceID{0xff}, Name: "op"}).Decision
			if (got == sdktrace.RecordAndSample) != c.want {
				t.Errorf("sampler %q arg %q parent sampled=%v valid=%v: %v, want sampled %v",
					tc.sampler, tc.arg, c.parent.IsSampled(), c.parent.IsValid(), got, c.want)
			}
		}
	}
}

// TestPropagatorIsW3C: traceparent, tracestate and baggage go through.
func TestPropagatorIsW3C(t *testing.T) {
	t.Parallel()
	in := propagation.MapCarrier{
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"tracestate":  "vendor=x",
		"baggage":     "tenant=acme",
	}
	var tr *Tracing
	ctx := tr.Propagator().Extract(context.Background(), in)
	out := propagation.MapCarrier{}
	tr.Propagator().Inject(ctx, out)
	for k, v := range in {
		if out[k] != v {
			t.Errorf("%s: %q, want %q", k, out[k], v)
		}
	}
	fields := tr.Propagator().Fields()
	slices.Sort(fields)
	if got := strings.Join(fields, ","); got != "baggage,traceparent,tracestate" {
		t.Errorf("fields %s", got)
	}
}

// TestMetricsRegisteredOnce: a second tracing on one registry is refused,
// as any duplicate registration is.
func TestMetricsRegisteredOnce(t *testing.T) {
	t.Parallel()
	cfg := Config{Endpoint: "http://127.0.0.1:1/v1/traces", ServiceName: "x"}
	reg := prometheus.NewRegistry()
	_, cleanup, err := New(testContext(t), cfg, zap.NewNop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cleanup(testContext(t)) }()
	if _, _, err := New(testContext(t), cfg, zap.NewNop(), reg); err == nil {
		t.Error("a second registration was accepted")
	}
	if _, _, err := New(testContext(t), Config{Endpoint: "ftp://x", ServiceName: "x"}, zap.NewNop(), nil); err == nil ||
		!strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_ENDPOINT") {
		t.Errorf("an invalid Config: %v", err)
	}
}
