package enginesim

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/redis/rueidis"

	"github.com/ensure-user/ensure-user/internal/protocol"
)

// Option configures a Sim beyond its Config.
type Option func(*Sim)

// WithTracing makes the Sim record the spans of each command it answers,
// in the trace of the command's traceparent (a new trace without one), as
// tp's spans, the context read with prop (W3C Trace Context). A nil or
// no-op tp leaves tracing off, at the cost of one nil check per batch.
//
// # Spans
//
// Per command (malformed entries have none: no trace to join, nothing to
// say):
//
//	engine createUser   consumer   from the read that delivered the command to its XACK
//	├─ XREADGROUP       client     the read (XAUTOCLAIM for a claimed entry)
//	├─ SADD             client     the user lookup (refengine's store Add)
//	└─ XADD             producer   the reply
//
// A batch read delivers many commands at once, before their trace
// contexts are known (they are in the entries read). Each command's trace
// gets its own copy of the read as a child, with the read's times and
// messaging.batch.message_count, rather than one read span linked from
// every command: a trace then shows, end to end, the wait between the
// service's XADD and the Engine's read. The copy starts when the read
// started or when the entry was added (its id's milliseconds), whichever is
// later, so that an idle XREADGROUP BLOCK does not show as time the command
// spent. The SADD and XADD of a batch are one pipeline each: every
// command's child spans that round trip, with db.operation.batch.size.
//
// Attributes: messaging.system=redis, messaging.destination.name (the
// stream), messaging.consumer.group.name, messaging.message.id (the entry
// id), ensure_user.engine_request_id, ensure_user.engine_result (the result
// label of engine_sim_commands_total), ensure_user.engine_reply_status. Never
// the user id or the email. The span's status is error when the reply is
// status error (or would be, in legacy mode).
func WithTracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) Option {
	return func(s *Sim) {
		if tp == nil || prop == nil {
			return
		}
		if _, off := tp.(noop.TracerProvider); off {
			return
		}
		s.tracer = &tracer{t: tp.Tracer(scopeName), prop: prop, stream: s.cfg.RequestStream, group: s.cfg.Group}
	}
}

// scopeName is the instrumentation scope of the Engine's spans.
const scopeName = "github.com/ensure-user/ensure-user/internal/enginesim"

// Span names.
const (
	spanCreateUser = "engine " + protocol.FunctionCreateUser
	spanOther      = "engine command" // another function: its name is the sender's to choose, so not in the span name
	spanXadd       = "XADD"
	spanSadd       = "SADD"
)

// Attributes of this project, and values of the conventional ones.
const (
	attrRequestID    = attribute.Key("ensure_user.engine_request_id")
	attrResult       = attribute.Key("ensure_user.engine_result")
	attrReplyStatus  = attribute.Key("ensure_user.engine_reply_status")
	attrReplyMissing = attribute.Key("ensure_user.engine_reply_stream_missing")
	messagingRedis   = "redis"
	operationXread   = "XREADGROUP"
	operationXclaim  = "XAUTOCLAIM"
)

// tracer records a Sim's spans.
type tracer struct {
	t             trace.Tracer
	prop          propagation.TextMapPropagator
	stream, group string
}

// read is how a batch was read: the command, and when it was sent and
// answered.
type read struct {
	op         string // operationXread or operationXclaim
	start, end time.Time
}

// batch is entries read together.
type batch struct {
	entries []rueidis.XRangeSlice
	read
}

// carrier reads a request's trace fields as a propagation.TextMapCarrier,
// without building a map.
type carrier struct{ req *protocol.Request }

func (c carrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.req.TraceParent
	case "tracestate":
		return c.req.TraceState
	}
	return ""
}

func (carrier) Set(string, string) {}
func (carrier) Keys() []string     { return []string{"traceparent", "tracestate"} }

// startCommand starts the consumer span of req, read as entry id of a batch
// of n, and records the read as its first child. It returns nil when the
// span does not record (the sampler left it out), so that nothing more is
// built for it.
func (t *tracer) startCommand(req *protocol.Request, id string, n int, r read) trace.Span {
	parent := t.prop.Extract(context.Background(), carrier{req})
	name := spanCreateUser
	if req.Function != protocol.FunctionCreateUser {
		name = spanOther
	}
	start := readStart(id, r)
	ctx, span := t.t.Start(parent, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(start))
	if !span.IsRecording() {
		return nil
	}
	span.SetAttributes(
		semconv.MessagingSystemKey.String(messagingRedis),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(t.stream),
		semconv.MessagingConsumerGroupName(t.group),
		semconv.MessagingMessageID(id),
		attrRequestID.String(req.RequestID),
	)
	_, rs := t.t.Start(ctx, r.op, trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start),
		trace.WithAttributes(
			semconv.DBSystemNameRedis,
			semconv.DBOperationName(r.op),
			semconv.MessagingSystemKey.String(messagingRedis),
			semconv.MessagingOperationTypeReceive,
			semconv.MessagingDestinationName(t.stream),
			semconv.MessagingBatchMessageCount(n),
		))
	rs.End(trace.WithTimestamp(r.end))
	return span
}

// readStart is when the read of entry id is shown to start: when the read
// started, or when the entry was added if later, and at most when the read
// ended (the Redis server's clock may be ahead of this one).
func readStart(id string, r read) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	added, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return r.start
	}
	start := r.start
	if t := time.UnixMilli(added); t.After(start) {
		start = t
	}
	if start.After(r.end) {
		return r.end
	}
	return start
}

// child records a finished child of span, from start to end.
func (t *tracer) child(span trace.Span, name string, kind trace.SpanKind, start, end time.Time, err error, attrs ...attribute.KeyValue) {
	_, c := t.t.Start(trace.ContextWithSpan(context.Background(), span), name,
		trace.WithSpanKind(kind), trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	if err != nil {
		c.RecordError(err)
		c.SetStatus(codes.Error, err.Error())
	}
	c.End(trace.WithTimestamp(end))
}

// lookedUp records the SADD of a batch of n as a child of span.
func (t *tracer) lookedUp(span trace.Span, start, end time.Time, n int, err error) {
	t.child(span, spanSadd, trace.SpanKindClient, start, end, err,
		semconv.DBSystemNameRedis, semconv.DBOperationName(spanSadd), semconv.DBOperationBatchSize(n))
}

// answered records the command's result and reply status on span.
func (t *tracer) answered(span trace.Span, result string, reply protocol.Reply) {
	span.SetAttributes(attrResult.String(result))
	if reply.Status != "" {
		span.SetAttributes(attrReplyStatus.String(reply.Status))
	}
	if result == ResultError || result == ResultUnsupported {
		// reply.Message is one of refengine's fixed error messages here,
		// never a user id (the message of an ok reply).
		span.SetStatus(codes.Error, reply.Message)
	}
}

// replied records the reply's XADD, in a pipeline of n commands, as a child
// of span. missing means the reply stream was gone (NOMKSTREAM): nothing
// was written, and nothing is wrong.
func (t *tracer) replied(span trace.Span, stream string, start, end time.Time, n int, missing bool, err error) {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(messagingRedis),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingDestinationName(stream),
		semconv.DBSystemNameRedis,
		semconv.DBOperationName(spanXadd),
		semconv.DBOperationBatchSize(n),
	}
	if missing {
		attrs = append(attrs, attrReplyMissing.Bool(true))
	}
	t.child(span, spanXadd, trace.SpanKindProducer, start, end, err, attrs...)
	if err != nil {
		span.SetStatus(codes.Error, "reply not written")
	}
}

// acked ends span once its entry's XACK is answered. A failed XACK is no
// failure of the command: the entry stays pending and is answered again.
func (t *tracer) acked(span trace.Span, err error) {
	if err != nil {
		span.RecordError(fmt.Errorf("xack: %w", err))
	}
	span.End()
}

// failed ends span for a command that is not answered this time: it stays
// pending, and is answered again (in the same trace) after a retry or a
// claim.
func (t *tracer) failed(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, "not answered: the entry stays pending")
	span.End()
}
