package enginesim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap/zaptest"

	"github.com/ensure-user/ensure-user/adapters/oteltrace"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/internal/protocol"
	"github.com/ensure-user/ensure-user/test/testenv"
)

// The email and user id of the traced commands: no span may carry them.
const (
	tracedEmail = "traced.person@example.com"
	tracedUser  = "traced-user"
)

// tracedEngine runs a Sim for cfg on srv that exports its spans to a
// receiver of the test's own, read from the variables engine-sim reads.
func tracedEngine(t *testing.T, srv *server, cfg Config) (*engine, *testenv.OTLPReceiver) {
	t.Helper()
	recv := testenv.StartOTLPReceiver(t)
	tcfg, err := oteltrace.ConfigFromEnv(lookup(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": recv.Endpoint(),
		"OTEL_BSP_SCHEDULE_DELAY":     "10",
	}), "engine-sim")
	if err != nil {
		t.Fatal(err)
	}
	tr, cleanup, err := oteltrace.New(testContext(t), tcfg, zaptest.NewLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cleanup(testContext(t)) }) // after the engine stops: cleanups run last first
	return startEngine(t, srv, cfg, WithTracing(tr.TracerProvider(), tr.Propagator())), recv
}

// sendTraced XADDs a createUser carrying trace, and returns it with its
// entry id.
func (s *server) sendTraced(cfg Config, user string, trace domain.Trace) (domain.Command, string) {
	s.t.Helper()
	cmd := domain.Command{
		RequestID: domain.NewRequestID(),
		User:      domain.User{ID: user, Email: tracedEmail},
		SentAt:    time.Now().UTC(),
		Trace:     trace,
	}
	id, err := s.do("XADD", cfg.RequestStream, "*", protocol.Field, string(protocol.EncodeCommand(cmd, ""))).ToString()
	if err != nil {
		s.t.Fatal(err)
	}
	return cmd, id
}

// commandTrace waits for the finished spans of the command in entry id:
// its consumer span (ended last) and the spans of that span's trace.
func commandTrace(t *testing.T, recv *testenv.OTLPReceiver, id string) (testenv.ReceivedSpan, []testenv.ReceivedSpan) {
	t.Helper()
	var consumer testenv.ReceivedSpan
	spans, err := recv.WaitSpans(testContext(t), func(spans []testenv.ReceivedSpan) bool {
		for _, s := range spans {
			if s.Attributes["messaging.message.id"] == id && s.Kind == trace.SpanKindConsumer {
				consumer = s
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	return consumer, testenv.SpansOf(spans, consumer.TraceID)
}

// checkNoPersonalData fails when any span's attribute, status or resource
// holds the email or the user id.
func checkNoPersonalData(t *testing.T, spans []testenv.ReceivedSpan) {
	t.Helper()
	for _, s := range spans {
		all := fmt.Sprint(s.Attributes, s.Resource, s.StatusMessage, s.Name, s.Events)
		for _, secret := range []string{tracedEmail, tracedUser} {
			if strings.Contains(all, secret) {
				t.Errorf("span %s carries %q: %s", s.Name, secret, all)
			}
		}
	}
}

// TestTracingContinuesTheCommandsTrace: the Engine's spans join the trace
// of the command's traceparent, under its span, with the read, the lookup
// and the reply as children.
func TestTracingContinuesTheCommandsTrace(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	_, recv := tracedEngine(t, srv, cfg)
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	cmd, id := srv.sendTraced(cfg, tracedUser, domain.Trace{
		Parent: "00-" + traceID + "-" + parentID + "-01",
		State:  "vendor=opaque",
	})
	if r := srv.waitReplies(cfg.ReplyStream, 1); r[0].RequestID != cmd.RequestID {
		t.Fatalf("reply to %s", r[0].RequestID)
	}

	consumer, spans := commandTrace(t, recv, id)
	if consumer.TraceID != traceID || consumer.ParentSpanID != parentID || consumer.TraceState != "vendor=opaque" {
		t.Errorf("consumer span in trace %s under %s (state %q), want %s under %s",
			consumer.TraceID, consumer.ParentSpanID, consumer.TraceState, traceID, parentID)
	}
	if consumer.Name != "engine createUser" || consumer.Service != "engine-sim" || consumer.StatusCode != codes.Unset {
		t.Errorf("consumer span %+v", consumer)
	}
	for k, want := range map[string]any{
		"messaging.system":                "redis",
		"messaging.destination.name":      cfg.RequestStream,
		"messaging.consumer.group.name":   DefaultGroup,
		"messaging.message.id":            id,
		"ensure_user.engine_request_id":   cmd.RequestID,
		"ensure_user.engine_reply_status": domain.StatusOK,
		"ensure_user.engine_result":       ResultOK,
	} {
		if got := consumer.Attributes[k]; got != want {
			t.Errorf("consumer %s = %v, want %v", k, got, want)
		}
	}

	children := map[string]testenv.ReceivedSpan{}
	for _, s := range spans {
		if s.ParentSpanID == consumer.SpanID {
			children[s.Name] = s
		}
	}
	for name, kind := range map[string]trace.SpanKind{
		"XREADGROUP": trace.SpanKindClient, "SADD": trace.SpanKindClient, "XADD": trace.SpanKindProducer,
	} {
		c, ok := children[name]
		switch {
		case !ok:
			t.Errorf("no %s child of the consumer span; trace: %+v", name, spans)
		case c.Kind != kind || c.StatusCode != codes.Unset:
			t.Errorf("%s: kind %v status %v", name, c.Kind, c.StatusCode)
		case c.Start.Before(consumer.Start) || c.End.After(consumer.End):
			t.Errorf("%s runs %v to %v, outside its parent's %v to %v", name, c.Start, c.End, consumer.Start, consumer.End)
		}
	}
	if got := children["XADD"].Attributes["messaging.destination.name"]; got != cfg.ReplyStream {
		t.Errorf("XADD destination %v, want %s", got, cfg.ReplyStream)
	}
	if read, sadd, xadd := children["XREADGROUP"], children["SADD"], children["XADD"]; sadd.Start.Before(read.End) || xadd.Start.Before(sadd.End) {
		t.Errorf("read, lookup and reply overlap: read to %v, lookup %v to %v, reply from %v", read.End, sadd.Start, sadd.End, xadd.Start)
	}
	if len(spans) != 4 {
		t.Errorf("%d spans in the trace, want 4: %+v", len(spans), spans)
	}
	checkNoPersonalData(t, spans)
}

// TestTracingWithoutTraceparent: a command without trace context starts a
// trace of its own.
func TestTracingWithoutTraceparent(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	_, recv := tracedEngine(t, srv, cfg)
	_, id := srv.sendTraced(cfg, tracedUser, domain.Trace{})
	consumer, spans := commandTrace(t, recv, id)
	if consumer.ParentSpanID != "" || len(consumer.TraceID) != 32 {
		t.Errorf("consumer span in trace %q under %q, want a new trace", consumer.TraceID, consumer.ParentSpanID)
	}
	if len(spans) != 4 {
		t.Errorf("%d spans in the trace, want 4", len(spans))
	}
	checkNoPersonalData(t, spans)
}

// TestTracingMarksErrorReplies: a reply with status error makes the span's
// status error; a second command for the user is exists, not an error.
func TestTracingMarksErrorReplies(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	cfg.ErrorRatio = 1
	_, recv := tracedEngine(t, srv, cfg)
	_, id := srv.sendTraced(cfg, tracedUser, domain.Trace{})
	consumer, spans := commandTrace(t, recv, id)
	if consumer.StatusCode != codes.Error || consumer.Attributes["ensure_user.engine_reply_status"] != domain.StatusError ||
		consumer.Attributes["ensure_user.engine_result"] != ResultError {
		t.Errorf("consumer span of an error reply: %+v", consumer)
	}
	for _, s := range spans {
		if s.Name == "SADD" {
			t.Errorf("an injected error looked the user up: %+v", s)
		}
	}
	checkNoPersonalData(t, spans)
}

// TestTracingHonoursAnUnsampledParent: a traceparent whose caller did not
// sample records nothing here either (parentbased_always_on).
func TestTracingHonoursAnUnsampledParent(t *testing.T) {
	t.Parallel()
	srv := realRedis(t)
	cfg := testConfig(t)
	_, recv := tracedEngine(t, srv, cfg)
	const unsampled = "11111111111111111111111111111111"
	srv.sendTraced(cfg, "user-a", domain.Trace{Parent: "00-" + unsampled + "-2222222222222222-00"})
	_, after := srv.sendTraced(cfg, "user-b", domain.Trace{})
	// The later command's spans arrive after the earlier one's would have.
	commandTrace(t, recv, after)
	if got := testenv.SpansOf(recv.Spans(), unsampled); len(got) != 0 {
		t.Errorf("spans recorded under an unsampled parent: %+v", got)
	}
}

func TestWithTracingOffIsNil(t *testing.T) {
	t.Parallel()
	prop := propagation.TraceContext{}
	for _, tp := range []trace.TracerProvider{nil, noop.NewTracerProvider()} {
		s := &Sim{cfg: Config{}.withDefaults(func() string { return "c" })}
		WithTracing(tp, prop)(s)
		if s.tracer != nil {
			t.Errorf("provider %T: tracing on", tp)
		}
	}
	var off *oteltrace.Tracing
	s := &Sim{}
	WithTracing(off.TracerProvider(), off.Propagator())(s)
	if s.tracer != nil {
		t.Error("the tracing of oteltrace when off turned tracing on")
	}
}

func TestReadStart(t *testing.T) {
	t.Parallel()
	base := time.UnixMilli(1_700_000_000_000)
	r := read{op: operationXread, start: base, end: base.Add(time.Second)}
	for _, tc := range []struct {
		id   string
		want time.Time
	}{
		{"1700000000500-0", base.Add(500 * time.Millisecond)}, // added while the read blocked
		{"1699999999000-3", base},                             // added before the read (pending, claimed)
		{"1700000009000-0", r.end},                            // the server's clock ahead of ours
		{"junk", base},
	} {
		if got := readStart(tc.id, r); !got.Equal(tc.want) {
			t.Errorf("readStart(%s) = %v, want %v", tc.id, got, tc.want)
		}
	}
}
