package enginesim

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a command, the result label of engine_sim_commands_total.
const (
	ResultOK          = "ok"          // a new user: status ok
	ResultExists      = "exists"      // a known user: status exists
	ResultError       = "error"       // an injected or store error: status error
	ResultUnsupported = "unsupported" // a function other than createUser: status error
	ResultDropped     = "dropped"     // acked without a reply (ENGINE_DROP_RATIO)
	ResultMalformed   = "malformed"   // no message, not a request, or no requestId: acked and skipped
)

// Redis operations, the op label of engine_sim_redis_errors_total.
const (
	opXgroup     = "xgroup"
	opXreadgroup = "xreadgroup"
	opXautoclaim = "xautoclaim"
	opSadd       = "sadd"
	opXadd       = "xadd"
	opXack       = "xack"
)

// metrics are the runner's Prometheus series.
type metrics struct {
	commands map[string]prometheus.Counter // by result
	claimed  prometheus.Counter
	batch    prometheus.Histogram
	errs     map[string]prometheus.Counter // by op
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	commands := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "engine_sim", Name: "commands_total",
		Help: "Request entries handled, by result.",
	}, []string{"result"})
	claimed := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "engine_sim", Name: "claimed_total",
		Help: "Pending entries taken over from idle consumers with XAUTOCLAIM.",
	})
	batch := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "engine_sim", Name: "batch_size",
		Help:    "Entries per batch read (XREADGROUP or XAUTOCLAIM).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1 to 2048
	})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "engine_sim", Name: "redis_errors_total",
		Help: "Failed Redis commands, by command.",
	}, []string{"op"})
	if reg != nil {
		for _, c := range []prometheus.Collector{commands, claimed, batch, errs} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	m := &metrics{
		commands: map[string]prometheus.Counter{},
		claimed:  claimed,
		batch:    batch,
		errs:     map[string]prometheus.Counter{},
	}
	for _, r := range []string{ResultOK, ResultExists, ResultError, ResultUnsupported, ResultDropped, ResultMalformed} {
		m.commands[r] = commands.WithLabelValues(r)
	}
	for _, op := range []string{opXgroup, opXreadgroup, opXautoclaim, opSadd, opXadd, opXack} {
		m.errs[op] = errs.WithLabelValues(op)
	}
	return m, nil
}
