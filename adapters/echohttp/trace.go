package echohttp

import (
	"net"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The server span. It is written here rather than by otelhttp or
// otelecho: a parked request is answered after its handler returned, and
// its span must end when its answer is written, which only this layer
// knows; the attributes are the same semantic conventions those write.

// startSpan starts the request's server span, continuing the trace of its
// W3C headers, and returns the request carrying it. Without a tracer it
// does nothing.
func (s *Server) startSpan(x *exchange, r *http.Request) *http.Request {
	if s.opts.Tracer == nil {
		return r
	}
	ctx := s.opts.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, x.span = s.opts.Tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
			attribute.String("network.protocol.version", protocolVersion(r)),
			attribute.String("client.address", clientAddress(r.RemoteAddr)),
			attribute.String("user_agent.original", r.UserAgent()),
		))
	return r.WithContext(ctx)
}

// endSpan completes the server span with what the request line says: the
// route, the status, the request id and, for the endpoint, the outcome. A
// 5xx is an error of the span; a 4xx (a bad token, say) is the client's,
// not the server's.
func (s *Server) endSpan(x *exchange) {
	span := x.span
	if span == nil {
		return
	}
	if x.route != "unmatched" {
		span.SetName(x.method + " " + x.route)
		span.SetAttributes(attribute.String("http.route", x.route))
	}
	span.SetAttributes(
		attribute.Int("http.response.status_code", x.status),
		attribute.String("ensure_user.request_id", x.id),
	)
	if x.outcome != "" {
		span.SetAttributes(attribute.String("ensure_user.outcome", x.outcome))
	}
	if x.status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(x.status))
	}
	span.End()
}

// clientAddress is the host of a RemoteAddr.
func clientAddress(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

func protocolVersion(r *http.Request) string {
	switch {
	case r.ProtoMajor == 1 && r.ProtoMinor == 1:
		return "1.1"
	case r.ProtoMajor == 1:
		return "1.0"
	case r.ProtoMajor == 2:
		return "2"
	}
	return r.Proto
}

// traceIDOf is the trace id of a sampled span, for the latency histogram's
// exemplar; "" when there is none.
func traceIDOf(span trace.Span) string {
	if span == nil {
		return ""
	}
	sc := span.SpanContext()
	if !sc.IsSampled() {
		return ""
	}
	return sc.TraceID().String()
}
