package app

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/adapters/oteltrace"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
)

// instrumented decorates the use case with its outcome metric. The use case
// itself never logs, nor counts.
type instrumented struct {
	next      echohttp.EnsureUser
	tracer    trace.Tracer                          // nil: no wait spans
	outcomes  [domain.Failed + 1]prometheus.Counter // by domain outcome, resolved once
	coalesced prometheus.Counter
}

var _ echohttp.EnsureUser = (*instrumented)(nil)

// NewInstrumented wraps uc with metrics and logging.
func NewInstrumented(uc *ensureuser.UseCase, reg prometheus.Registerer, t *oteltrace.Tracing) (echohttp.EnsureUser, error) {
	outcomes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ensure_user_outcomes_total",
		Help: "Ensure-user requests by outcome: confirmed, initiated, or the error row they ended in.",
	}, []string{"outcome"})
	d := &instrumented{next: uc, tracer: tracerOf(t, scope+"/app")}
	for _, o := range domain.Outcomes() {
		d.outcomes[o] = outcomes.WithLabelValues(o.String()) // exports zeros, so rates work from the start
	}
	d.coalesced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ensure_user_coalesced_total",
		Help: "Requests that shared another request's in-flight command (ENGINE_COALESCE=true).",
	})
	for _, c := range []prometheus.Collector{outcomes, d.coalesced} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ensure_user_requests_waiting",
		Help: "Requests waiting for an Engine reply now (ENGINE_MAX_WAITING caps it).",
	}, func() float64 { return float64(uc.Waiting()) })); err != nil {
		return nil, err
	}
	return d, nil
}

// Start runs the use case's first part and counts the outcome of a request
// that ends there.
func (d *instrumented) Start(ctx context.Context, in ensureuser.Input) (ensureuser.Pending, error) {
	p, err := d.next.Start(ctx, in)
	if err != nil {
		d.count(&p.Result, err)
	}
	return p, err
}

// Wait waits for the reply and counts the request's outcome; with tracing,
// the wait is a span of its own. A parked request's goroutine holds this
// frame while it waits, so the span's work is in a function of its own.
func (d *instrumented) Wait(ctx context.Context, p *ensureuser.Pending) (ensureuser.Result, error) {
	if d.tracer != nil {
		return d.tracedWait(ctx, p)
	}
	res, err := d.next.Wait(ctx, p)
	d.count(&res, err)
	return res, err
}

// tracedWait is Wait inside a span.
//
//go:noinline
func (d *instrumented) tracedWait(ctx context.Context, p *ensureuser.Pending) (ensureuser.Result, error) {
	ctx, span := d.tracer.Start(ctx, "wait for engine reply",
		trace.WithAttributes(attribute.String("ensure_user.engine_request_id", p.RequestID)))
	res, err := d.next.Wait(ctx, p)
	d.count(&res, err)
	o := res.Outcome
	if err != nil {
		o = domain.OutcomeOf(err)
	}
	span.SetAttributes(attribute.String("ensure_user.outcome", o.String()),
		attribute.Bool("ensure_user.timed_out", res.TimedOut), attribute.Bool("ensure_user.coalesced", res.Coalesced))
	if err != nil && o != domain.ClientGone {
		span.SetStatus(codes.Error, o.String())
	}
	span.End()
	return res, err
}

// count counts one request's outcome.
func (d *instrumented) count(res *ensureuser.Result, err error) {
	o := res.Outcome
	if err != nil {
		o = domain.OutcomeOf(err)
	}
	d.outcomes[o].Inc()
	if res.Coalesced {
		d.coalesced.Inc()
	}
}
