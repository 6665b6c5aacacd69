package testenv

import (
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ensure-user/ensure-user/internal/proc"
)

// ScrapeValue returns the value of one series in a Prometheus text
// exposition, written exactly as it appears there (labels sorted by name,
// e.g. `ensure_user_outcomes_total{outcome="busy"}`); 0 when absent.
func ScrapeValue(t testing.TB, r io.Reader, series string) float64 {
	t.Helper()
	m, err := proc.ParseSeries(r, series)
	if err != nil {
		t.Fatalf("read metrics: %v", err)
	}
	return m[series]
}

// Metric returns the value of the series of metric name in reg whose labels
// include the given name/value pairs (the first such series): a counter's,
// gauge's or untyped metric's value, or a histogram's or summary's sample
// count. It fails t when there is no such series.
func Metric(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, ok := LookupMetric(t, reg, name, labels...)
	if !ok {
		t.Fatalf("no metric %s%v", name, labels)
	}
	return v
}

// LookupMetric is Metric for a series that may not exist (yet): ok is false
// when there is none.
func LookupMetric(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) (v float64, ok bool) {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metric %s: labels %v are not name/value pairs", name, labels)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := make(map[string]string, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			case m.GetSummary() != nil:
				return float64(m.GetSummary().GetSampleCount()), true
			default:
				return m.GetUntyped().GetValue(), true
			}
		}
	}
	return 0, false
}
