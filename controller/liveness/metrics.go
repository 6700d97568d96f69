package liveness

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the table's Prometheus metrics.
type metrics struct {
	hosts       *prometheus.GaugeVec
	hostsBy     [4]prometheus.Gauge
	transitions *prometheus.CounterVec
	toState     [4]prometheus.Counter
	sweepSecs   prometheus.Histogram
	sinkErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		hosts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_liveness_hosts", Help: "Hosts per liveness state at the last sweep.",
		}, []string{"state"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_liveness_transitions_total", Help: "Liveness state changes, by new state.",
		}, []string{"to"}),
		sweepSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_liveness_sweep_duration_seconds", Help: "Duration of one sweep of the liveness table.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16), // 10µs .. 0.33s
		}),
		sinkErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_liveness_sink_errors_total", Help: "Batches of transitions the sink failed to take.",
		}),
	}
	for s := Unknown; s <= Dead; s++ {
		m.hostsBy[s] = m.hosts.WithLabelValues(s.String())
		m.toState[s] = m.transitions.WithLabelValues(s.String())
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.hosts, m.transitions, m.sweepSecs, m.sinkErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) sweep(c StateCounts, ts []Transition, d time.Duration) {
	m.hostsBy[Unknown].Set(float64(c.Unknown))
	m.hostsBy[Alive].Set(float64(c.Alive))
	m.hostsBy[Suspect].Set(float64(c.Suspect))
	m.hostsBy[Dead].Set(float64(c.Dead))
	for _, t := range ts {
		m.toState[t.To].Inc()
	}
	m.sweepSecs.Observe(d.Seconds())
}
