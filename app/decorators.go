package app

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ensure-user/ensure-user/adapters/echohttp"
	"github.com/ensure-user/ensure-user/domain"
	"github.com/ensure-user/ensure-user/domain/ensureuser"
	"github.com/ensure-user/ensure-user/internal/requestid"
)

// instrumented decorates the use case with its outcome metric and with the
// log lines the HTTP request line cannot carry (a command that stays sent
// although its client left). The use case itself never logs.
type instrumented struct {
	next      echohttp.EnsureUser
	log       *zap.Logger
	outcomes  map[string]prometheus.Counter // the known label values, resolved once
	vec       *prometheus.CounterVec
	coalesced prometheus.Counter
}

var _ echohttp.EnsureUser = (*instrumented)(nil)

// Outcome label values of ensure_user_outcomes_total, one per answer row.
var outcomeOf = []struct {
	err  error
	name string
}{
	{domain.ErrNoToken, "no_token"},
	{domain.ErrInvalidToken, "invalid_token"},
	{domain.ErrInvalidPayload, "invalid_payload"},
	{domain.ErrVerifierUnavailable, "verifier_unavailable"},
	{domain.ErrBusy, "busy"},
	{domain.ErrBusUnavailable, "not_sent"},
	{domain.ErrEngineFailed, "engine_failed"},
	{context.Canceled, "client_gone"},
}

// NewInstrumented wraps uc with metrics and logging.
func NewInstrumented(uc *ensureuser.UseCase, log *zap.Logger, reg prometheus.Registerer) (echohttp.EnsureUser, error) {
	outcomes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ensure_user_outcomes_total",
		Help: "Ensure-user requests by outcome: confirmed, initiated, or the error row they ended in.",
	}, []string{"outcome"})
	d := &instrumented{next: uc, log: log.Named("ensureuser"), outcomes: map[string]prometheus.Counter{}, vec: outcomes}
	for _, o := range []string{"confirmed", "initiated", "no_token", "invalid_token", "invalid_payload",
		"verifier_unavailable", "busy", "not_sent", "engine_failed", "client_gone", "error"} {
		d.outcomes[o] = outcomes.WithLabelValues(o) // exports zeros, so rates work from the start
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

// Execute runs the use case, counts its outcome, and notes a sent command
// whose client went away.
func (d *instrumented) Execute(ctx context.Context, in ensureuser.Input) (ensureuser.Result, error) {
	res, err := d.next.Execute(ctx, in)
	name := "error"
	if err == nil {
		name = res.Outcome.String()
	} else {
		for _, o := range outcomeOf {
			if errors.Is(err, o.err) {
				name = o.name
				break
			}
		}
	}
	c, ok := d.outcomes[name]
	if !ok { // an outcome the list in NewInstrumented misses
		c = d.vec.WithLabelValues(name)
	}
	c.Inc()
	if res.Coalesced {
		d.coalesced.Inc()
	}
	if name == "client_gone" && res.Sent {
		d.log.Info("client went away while waiting; the command stays sent",
			zap.String("request_id", requestid.From(ctx)),
			zap.String("engine_request_id", res.RequestID),
			zap.String("user_id", res.UserID))
	}
	return res, err
}
