package agent

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats is a snapshot of the agent's counters (also exported as
// Prometheus metrics, see Config.Registerer).
type Stats struct {
	// Learning.
	Misses         uint64 // misses read from the driver
	Relearns       uint64 // misses answered from the cache (the driver had lost the location)
	LookupRequests uint64 // LookupRequest datagrams sent
	LookupQueries  uint64 // queries in them, first sends and retries
	LookupRetries  uint64 // queries sent again after LookupTimeout
	LookupGiveUps  uint64 // lookups dropped after LookupTries sends
	AnswersFound   uint64 // answers "found" applied
	AnswersMissing uint64 // answers "not found" applied (negative cache)
	AnswersIgnored uint64 // answers to no query of ours, older than the cache, or invalid
	Invalidations  uint64 // invalidations applied (Learn of the new location or Forget)
	InvalidStale   uint64 // invalidations not newer than the cache
	InvalidIgnored uint64 // invalidations of locations not cached
	Expiries       uint64 // locations forgotten because their TTL ran out
	// UDP.
	DatagramsRejected uint64 // datagrams that failed authentication or decoding
	HeartbeatsSent    uint64
	HeartbeatAcks     uint64
	// Config stream and programming.
	StreamConnects uint64 // sessions welcomed by a controller
	// StreamLost counts welcomed sessions that ended (read, write or
	// protocol errors; a replica leaving the list), StreamFailed attempts
	// that never got a Welcome (dial, handshake timeout, refusal), and
	// StreamRefused those of them a controller refused (stale, auth, full).
	StreamLost, StreamFailed, StreamRefused uint64
	Acks                                    uint64
	Nacks                                   uint64
	HashMismatches                          uint64 // deltas refused because the view hash did not match
	SetErrors                               uint64 // failed Driver.Set calls
	Reconciles                              uint64 // periodic or retry re-Sets
	Repairs                                 uint64 // re-Sets that wrote to the data plane (drift repaired)
	PersistErrors                           uint64
	ReportErrors                            uint64 // failed Register or ReportEndpoints calls
}

// counters are the live counters behind Stats.
type counters struct {
	misses, relearns                                       atomic.Uint64
	lookupRequests, lookupQueries, lookupRetries, giveUps  atomic.Uint64
	answersFound, answersMissing, answersIgnored           atomic.Uint64
	invalidations, invalidStale, invalidIgnored, expiries  atomic.Uint64
	rejected, heartbeats, heartbeatAcks                    atomic.Uint64
	connects, acks, nacks, hashMismatches                  atomic.Uint64
	streamLost, streamFailed, streamRefused                atomic.Uint64
	setErrors, reconciles, repairs, persistErrs, reportErr atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Misses: c.misses.Load(), Relearns: c.relearns.Load(),
		LookupRequests: c.lookupRequests.Load(), LookupQueries: c.lookupQueries.Load(),
		LookupRetries: c.lookupRetries.Load(), LookupGiveUps: c.giveUps.Load(),
		AnswersFound: c.answersFound.Load(), AnswersMissing: c.answersMissing.Load(), AnswersIgnored: c.answersIgnored.Load(),
		Invalidations: c.invalidations.Load(), InvalidStale: c.invalidStale.Load(), InvalidIgnored: c.invalidIgnored.Load(),
		Expiries:          c.expiries.Load(),
		DatagramsRejected: c.rejected.Load(), HeartbeatsSent: c.heartbeats.Load(), HeartbeatAcks: c.heartbeatAcks.Load(),
		StreamConnects: c.connects.Load(), Acks: c.acks.Load(), Nacks: c.nacks.Load(),
		StreamLost: c.streamLost.Load(), StreamFailed: c.streamFailed.Load(), StreamRefused: c.streamRefused.Load(),
		HashMismatches: c.hashMismatches.Load(),
		SetErrors:      c.setErrors.Load(), Reconciles: c.reconciles.Load(), Repairs: c.repairs.Load(),
		PersistErrors: c.persistErrs.Load(), ReportErrors: c.reportErr.Load(),
	}
}

// register exports the counters and a few gauges to reg.
func (a *Agent) register(reg prometheus.Registerer) error {
	c := &a.counters
	counter := func(name, help string, v *atomic.Uint64, labels prometheus.Labels) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "weft", Subsystem: "agent", Name: name, Help: help, ConstLabels: labels,
		}, func() float64 { return float64(v.Load()) })
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "weft", Subsystem: "agent", Name: name, Help: help}, f)
	}
	result := func(r string) prometheus.Labels { return prometheus.Labels{"result": r} }
	const (
		answersHelp = "Lookup answers received, by what they did."
		invHelp     = "Invalidations received (UDP or config stream), by what they did."
		deltasHelp  = "Config-stream deltas answered, by answer."
	)
	cs := []prometheus.Collector{
		counter("misses_total", "Data-plane misses read from the driver.", &c.misses, nil),
		counter("relearns_total", "Misses answered from the learn cache.", &c.relearns, nil),
		counter("lookup_requests_total", "LookupRequest datagrams sent.", &c.lookupRequests, nil),
		counter("lookup_queries_total", "Lookup queries sent, first sends and retries.", &c.lookupQueries, nil),
		counter("lookup_retries_total", "Lookup queries sent again after a timeout.", &c.lookupRetries, nil),
		counter("lookup_giveups_total", "Lookups given up after the last try.", &c.giveUps, nil),
		counter("lookup_answers_total", answersHelp, &c.answersFound, result("found")),
		counter("lookup_answers_total", answersHelp, &c.answersMissing, result("not_found")),
		counter("lookup_answers_total", answersHelp, &c.answersIgnored, result("ignored")),
		counter("invalidations_total", invHelp, &c.invalidations, result("applied")),
		counter("invalidations_total", invHelp, &c.invalidStale, result("stale")),
		counter("invalidations_total", invHelp, &c.invalidIgnored, result("ignored")),
		counter("learn_expiries_total", "Learned locations forgotten when their TTL ran out.", &c.expiries, nil),
		counter("datagrams_rejected_total", "UDP datagrams that failed authentication, replay check or decoding.", &c.rejected, nil),
		counter("heartbeats_sent_total", "Heartbeats sent.", &c.heartbeats, nil),
		counter("heartbeat_acks_total", "Heartbeat acknowledgements received.", &c.heartbeatAcks, nil),
		counter("stream_connects_total", "Config-stream sessions welcomed by a controller.", &c.connects, nil),
		counter("stream_lost_total", "Welcomed config-stream sessions that ended.", &c.streamLost, nil),
		counter("stream_failed_total", "Config-stream attempts that got no Welcome (dial, handshake, refusal).", &c.streamFailed, nil),
		counter("stream_refused_total", "Config-stream attempts a controller refused.", &c.streamRefused, nil),
		counter("deltas_total", deltasHelp, &c.acks, result("ack")),
		counter("deltas_total", deltasHelp, &c.nacks, result("nack")),
		counter("view_hash_mismatches_total", "Deltas refused because the view did not match the controller's hash afterwards.", &c.hashMismatches, nil),
		counter("set_errors_total", "Failed Driver.Set calls.", &c.setErrors, nil),
		counter("reconciles_total", "Periodic or retry re-Sets of the desired state.", &c.reconciles, nil),
		counter("repairs_total", "Re-Sets that had to write to the data plane (drift repaired).", &c.repairs, nil),
		counter("persist_errors_total", "Failures to persist the view.", &c.persistErrs, nil),
		counter("report_errors_total", "Failed Register or ReportEndpoints calls.", &c.reportErr, nil),
		a.obs.lookupSeconds,
		&trafficCollector{a.obs},
		gauge("connected", "1 while a config stream is up.", func() float64 {
			if a.connected.Load() {
				return 1
			}
			return 0
		}),
		gauge("view_version", "Version of the view the agent holds.", func() float64 { return float64(a.version.Load()) }),
		gauge("learned_remotes", "Remote locations in the learn cache.", func() float64 {
			a.learnMu.Lock()
			defer a.learnMu.Unlock()
			return float64(a.cache.Positives())
		}),
	}
	var done []prometheus.Collector
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("register agent metrics: already registered (one agent per Registerer): %w", err)
			}
			return fmt.Errorf("register agent metrics: %w", err)
		}
		done = append(done, col)
	}
	a.collectors = done
	return nil
}
