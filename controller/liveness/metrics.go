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

// sinkMetrics are a RegistrySink's Prometheus metrics.
type sinkMetrics struct {
	disrupted          prometheus.Gauge
	deferred           *prometheus.CounterVec
	deferredDisruption prometheus.Counter
	deferredRate       prometheus.Counter
	marksPending       prometheus.Gauge
	suspectSkipped     prometheus.Counter
}

func newSinkMetrics(reg prometheus.Registerer) (*sinkMetrics, error) {
	m := &sinkMetrics{
		disrupted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_liveness_disrupted",
			Help: "1 during a mass disruption (a large share of the hosts not Alive at once), when endpoints of dead hosts are not marked Lost; else 0.",
		}),
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_liveness_endpoint_markings_deferred_total",
			Help: "Dead hosts whose endpoints were not marked Lost when they died, by reason (disruption, rate); they are marked later if still dead.",
		}, []string{"reason"}),
		marksPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_liveness_endpoint_markings_pending",
			Help: "Dead hosts whose endpoints are still to be marked Lost.",
		}),
		suspectSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_liveness_suspect_writes_skipped_total",
			Help: "Host drops from Alive to Suspect not written because of a mass disruption.",
		}),
	}
	m.deferredDisruption = m.deferred.WithLabelValues("disruption")
	m.deferredRate = m.deferred.WithLabelValues("rate")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.disrupted, m.deferred, m.marksPending, m.suspectSkipped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}
