package jwksauth

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the verifier's Prometheus series. Labels take a handful of
// fixed values only.
type metrics struct {
	refreshOK, refreshFailed prometheus.Counter
	keys                     prometheus.Gauge
	unknownKid               prometheus.Counter
	cacheHit, cacheMiss      prometheus.Counter
}

// newMetrics creates the series and registers them on reg (nil: not
// registered, for benchmarks).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	refresh := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ensure_user",
		Name:      "jwks_refresh_total",
		Help:      "Key set fetches, by result (ok or failed).",
	}, []string{"result"})
	keys := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "ensure_user",
		Name:      "jwks_keys",
		Help:      "Usable keys in the current key set.",
	})
	unknownKid := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ensure_user",
		Name:      "jwks_unknown_kid_refresh_total",
		Help:      "Key set fetches started because a token named an unknown kid.",
	})
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ensure_user",
		Name:      "token_cache_total",
		Help:      "Verified-token cache lookups, by result (hit or miss).",
	}, []string{"result"})
	if reg != nil {
		for _, c := range []prometheus.Collector{refresh, keys, unknownKid, cache} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return &metrics{
		refreshOK:     refresh.WithLabelValues("ok"),
		refreshFailed: refresh.WithLabelValues("failed"),
		keys:          keys,
		unknownKid:    unknownKid,
		cacheHit:      cache.WithLabelValues("hit"),
		cacheMiss:     cache.WithLabelValues("miss"),
	}, nil
}
