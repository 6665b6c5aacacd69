package app

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ensure-user/ensure-user/internal/buildinfo"
)

// NewRegistry returns the service's metric registry with the Go runtime and
// process collectors and the build_info gauge already registered. A fresh
// registry per App (never the global default) keeps tests independent.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	bi := buildinfo.Read()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ensure_user_build_info",
			Help: "Always 1; the labels describe the running binary.",
			ConstLabels: prometheus.Labels{
				"version":   bi.Version,
				"commit":    bi.Commit,
				"modified":  strconv.FormatBool(bi.Modified),
				"goversion": bi.GoVersion,
			},
		}, func() float64 { return 1 }),
	)
	return reg
}
