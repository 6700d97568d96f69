package stream

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	sessions  prometheus.Gauge
	refused   *prometheus.CounterVec
	ends      *prometheus.CounterVec
	deltas    *prometheus.CounterVec
	resources prometheus.Histogram
	acks      prometheus.Counter
	nacks     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_stream_sessions", Help: "Agents with an established config stream."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_stream_handshake_failures_total", Help: "Connections refused during the handshake, by reason."},
			[]string{"reason"}),
		ends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_stream_session_ends_total", Help: "Established sessions that ended, by reason."},
			[]string{"reason"}),
		deltas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_stream_deltas_total", Help: "Deltas sent to agents, by type (delta or snapshot)."},
			[]string{"type"}),
		resources: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_stream_delta_resources", Help: "Upserts plus deletes per delta sent.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_stream_acks_total", Help: "Deltas acknowledged by agents."}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_stream_nacks_total", Help: "Deltas refused by agents."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.sessions, m.refused, m.ends, m.deltas, m.resources, m.acks, m.nacks} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("stream: register metrics: %w", err)
		}
	}
	return m, nil
}
