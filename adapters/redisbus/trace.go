package redisbus

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ensure-user/ensure-user/domain"
)

// Option tunes a Bus.
type Option func(*Bus)

// WithTracing makes Send record a producer span per command and write that
// span's context, in W3C form with p, into the command's traceparent and
// tracestate: the Engine's spans then continue from the send itself.
// Without it the command carries the HTTP request's trace headers as they
// came.
func WithTracing(t trace.Tracer, p propagation.TextMapPropagator) Option {
	return func(b *Bus) { b.tracer, b.prop = t, p }
}

// sendSpan is the span of one Send; the zero value (tracing off) does
// nothing.
type sendSpan struct{ span trace.Span }

// startSend starts cmd's send span and puts its context into cmd's trace
// fields.
func (b *Bus) startSend(ctx context.Context, cmd *domain.Command) sendSpan {
	if b.tracer == nil {
		return sendSpan{}
	}
	ctx, span := b.tracer.Start(ctx, "send "+b.cfg.RequestStream, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "redis"),
			attribute.String("messaging.operation.name", "send"),
			attribute.String("messaging.destination.name", b.cfg.RequestStream),
			attribute.String("ensure_user.engine_request_id", cmd.RequestID),
		))
	carrier := propagation.MapCarrier{}
	b.prop.Inject(ctx, carrier)
	cmd.Trace = domain.Trace{Parent: carrier.Get("traceparent"), State: carrier.Get("tracestate")}
	return sendSpan{span}
}

// sent notes the entry id Redis gave the command.
func (s sendSpan) sent(id string) {
	if s.span != nil && id != "" {
		s.span.SetAttributes(attribute.String("messaging.message.id", id))
	}
}

// fail ends the span with err, and returns err.
func (s sendSpan) fail(err error) error {
	if s.span != nil {
		s.span.SetAttributes(attribute.Bool("ensure_user.sent", !errors.Is(err, domain.ErrBusUnavailable)))
		s.span.SetStatus(codes.Error, domain.OutcomeOf(err).String())
		s.span.End()
	}
	return err
}

// end ends the span of a command that went out.
func (s sendSpan) end() {
	if s.span != nil {
		s.span.SetAttributes(attribute.Bool("ensure_user.sent", true))
		s.span.End()
	}
}
