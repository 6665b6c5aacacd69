package correlate

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Engine bus metrics both buses share. Counters never carry
// user or request ids as labels.
type Metrics struct {
	sent       prometheus.Counter
	sendErrors *prometheus.CounterVec
	replies    *prometheus.CounterVec
	latency    prometheus.Histogram

	notSent, unknown prometheus.Counter    // children of sendErrors
	byResult         [4]prometheus.Counter // children of replies, by Result
}

// NewMetrics creates the bus metrics and registers them, and the gauges read
// from waiting and connected, on reg (when reg is not nil):
//
//	ensure_user_engine_commands_sent_total
//	ensure_user_engine_send_errors_total{kind="not_sent|unknown"}
//	ensure_user_engine_replies_total{result="delivered|late|unknown|malformed"}
//	ensure_user_engine_reply_latency_seconds
//	ensure_user_engine_waiting
//	ensure_user_engine_reader_connected
func NewMetrics(reg prometheus.Registerer, waiting func() int, connected func() bool) (*Metrics, error) {
	m := &Metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ensure_user", Name: "engine_commands_sent_total",
			Help: "createUser commands published to the Engine.",
		}),
		sendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ensure_user", Name: "engine_send_errors_total",
			Help: "Commands that failed to publish: not_sent (provably not sent) or unknown (may have been sent).",
		}, []string{"kind"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ensure_user", Name: "engine_replies_total",
			Help: "Engine reply entries read, by what became of them.",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ensure_user", Name: "engine_reply_latency_seconds",
			Help:    "Time from publishing a command to delivering its reply.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15), // 0.5 ms .. 8 s
		}),
	}
	m.notSent = m.sendErrors.WithLabelValues("not_sent")
	m.unknown = m.sendErrors.WithLabelValues("unknown")
	for _, r := range []Result{Delivered, Late, Unknown, Malformed} {
		m.byResult[r] = m.replies.WithLabelValues(r.String())
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{
		m.sent, m.sendErrors, m.replies, m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ensure_user", Name: "engine_waiting",
			Help: "Requests waiting for an Engine reply.",
		}, func() float64 { return float64(waiting()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ensure_user", Name: "engine_reader_connected",
			Help: "1 while the reply reader is receiving replies, else 0.",
		}, func() float64 {
			if connected() {
				return 1
			}
			return 0
		}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// Sent counts a command published.
func (m *Metrics) Sent() { m.sent.Inc() }

// NotSent counts a command that provably was not published.
func (m *Metrics) NotSent() { m.notSent.Inc() }

// SendUnknown counts a command whose publication outcome is unknown.
func (m *Metrics) SendUnknown() { m.unknown.Inc() }

// Reply counts a reply entry by result and, when delivered, observes waited.
func (m *Metrics) Reply(r Result, waited time.Duration) {
	m.byResult[r].Inc()
	if r == Delivered {
		m.latency.Observe(waited.Seconds())
	}
}
