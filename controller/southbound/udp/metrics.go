package udp

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/wire"
)

// Rejection reasons: the values of weft_udp_rejected_total{reason}.
const (
	reasonShort = iota
	reasonTooLarge
	reasonBadMagic
	reasonVersion
	reasonUnknownType
	reasonDirection
	reasonUnknownHost
	reasonAuth
	reasonReplay
	reasonMalformed
	reasonRateLimited
	reasonHostRange
	reasonNoLocator
	numReasons
)

var reasonNames = [numReasons]string{
	reasonShort:       "short",
	reasonTooLarge:    "too_large",
	reasonBadMagic:    "bad_magic",
	reasonVersion:     "version",
	reasonUnknownType: "unknown_type",
	reasonDirection:   "direction",
	reasonUnknownHost: "unknown_host",
	reasonAuth:        "auth",
	reasonReplay:      "replay",
	reasonMalformed:   "malformed",
	reasonRateLimited: "rate_limited",
	reasonHostRange:   "host_id_range",
	reasonNoLocator:   "no_locator",
}

// reasonOf maps a wire error to its reason without allocating.
func reasonOf(err error) int {
	switch err {
	case wire.ErrShort:
		return reasonShort
	case wire.ErrTooLarge:
		return reasonTooLarge
	case wire.ErrBadMagic:
		return reasonBadMagic
	case wire.ErrVersion:
		return reasonVersion
	case wire.ErrUnknownType:
		return reasonUnknownType
	case wire.ErrDirection:
		return reasonDirection
	case wire.ErrUnknownHost:
		return reasonUnknownHost
	case wire.ErrAuth:
		return reasonAuth
	case wire.ErrReplay:
		return reasonReplay
	}
	return reasonMalformed
}

// counts are one reader's counters for one batch, added to the totals
// and the metrics once per batch.
type counts struct {
	received, heartbeats, lookups uint64
	found, notFound               uint64
	outOfScope, tenantLimited     uint64
	acks, replies                 uint64
	sent, sendDropped             uint64
	rejected                      [numReasons]uint64
}

// totals are the server's counters since Start (Stats).
type totals struct {
	received, heartbeats, lookups atomic.Uint64
	found, notFound               atomic.Uint64
	outOfScope, tenantLimited     atomic.Uint64
	sent, sendDropped             atomic.Uint64
	invalidations                 atomic.Uint64
	rejected                      [numReasons]atomic.Uint64
}

type serverMetrics struct {
	received        prometheus.Counter
	accepted        *prometheus.CounterVec
	heartbeats      prometheus.Counter
	lookups         prometheus.Counter
	rejected        *prometheus.CounterVec
	rejectedBy      [numReasons]prometheus.Counter
	queries         *prometheus.CounterVec
	found, notFound prometheus.Counter
	outOfScope      prometheus.Counter
	tenantLimited   prometheus.Counter
	sent            *prometheus.CounterVec
	acks, replies   prometheus.Counter
	invalidations   prometheus.Counter
	sendDropped     prometheus.Counter
	readBatch       prometheus.Histogram
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_udp_received_total", Help: "Datagrams read from the UDP sockets."}),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_udp_accepted_total", Help: "Authentic datagrams processed, by type."}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_udp_rejected_total", Help: "Datagrams rejected, by reason."}, []string{"reason"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_udp_lookup_queries_total", Help: "Lookup queries, by result: found, not_found (answered), out_of_scope (refused: the host has no endpoint in the VNI), tenant_rate_limited (refused: the VNI's tenant asked too much)."}, []string{"result"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_udp_sent_total", Help: "Datagrams handed to the socket, by type (some may then be dropped: weft_udp_send_dropped_total)."}, []string{"type"}),
		sendDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_udp_send_dropped_total", Help: "Datagrams not sent because the socket was full or the host unreachable."}),
		readBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_udp_read_batch_size", Help: "Datagrams returned by one read (recvmmsg).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8)}),
	}
	m.heartbeats = m.accepted.WithLabelValues(wire.TypeHeartbeat.String())
	m.lookups = m.accepted.WithLabelValues(wire.TypeLookupRequest.String())
	for i, name := range reasonNames {
		m.rejectedBy[i] = m.rejected.WithLabelValues(name)
	}
	m.found = m.queries.WithLabelValues("found")
	m.notFound = m.queries.WithLabelValues("not_found")
	m.outOfScope = m.queries.WithLabelValues("out_of_scope")
	m.tenantLimited = m.queries.WithLabelValues("tenant_rate_limited")
	m.acks = m.sent.WithLabelValues(wire.TypeHeartbeatAck.String())
	m.replies = m.sent.WithLabelValues(wire.TypeLookupReply.String())
	m.invalidations = m.sent.WithLabelValues(wire.TypeInvalidate.String())
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.received, m.accepted, m.rejected, m.queries, m.sent, m.sendDropped, m.readBatch} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}

// add adds one batch's counts to the totals and the metrics and resets them.
func (s *Server) addCounts(c *counts) {
	t, m := &s.totals, s.m
	add := func(v uint64, a *atomic.Uint64, p prometheus.Counter) {
		if v != 0 {
			a.Add(v)
			p.Add(float64(v))
		}
	}
	add(c.received, &t.received, m.received)
	add(c.heartbeats, &t.heartbeats, m.heartbeats)
	add(c.lookups, &t.lookups, m.lookups)
	add(c.found, &t.found, m.found)
	add(c.notFound, &t.notFound, m.notFound)
	add(c.outOfScope, &t.outOfScope, m.outOfScope)
	add(c.tenantLimited, &t.tenantLimited, m.tenantLimited)
	add(c.sendDropped, &t.sendDropped, m.sendDropped)
	if c.sent != 0 {
		t.sent.Add(c.sent)
	}
	if c.acks != 0 {
		m.acks.Add(float64(c.acks))
	}
	if c.replies != 0 {
		m.replies.Add(float64(c.replies))
	}
	for i, v := range c.rejected {
		add(v, &t.rejected[i], m.rejectedBy[i])
	}
	*c = counts{}
}
