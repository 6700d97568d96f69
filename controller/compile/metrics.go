package compile

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the compiler's Prometheus metrics.
type metrics struct {
	recomputes       prometheus.Counter
	recomputeSeconds prometheus.Histogram
	changes          prometheus.Counter
	views            prometheus.Gauge
	resources        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		recomputes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_compile_recomputes_total", Help: "Host views recomputed."}),
		recomputeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_compile_recompute_seconds", Help: "Time to recompute and diff one host view.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}), // 1µs .. 4s
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_compile_view_changes_total", Help: "Recomputes that changed a view (a new view version)."}),
		views: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_compile_views", Help: "Host views held."}),
		resources: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_compile_resources", Help: "Resources in all host views."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.recomputes, m.recomputeSeconds, m.changes, m.views, m.resources} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("compile: register metrics: %w", err)
		}
	}
	return m, nil
}
