package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus metrics plus the counters Stats reads.
type metrics struct {
	commitSeconds prometheus.Histogram
	batchSize     prometheus.Histogram
	txnSeconds    prometheus.Histogram
	cacheRevision prometheus.Gauge
	watchLag      prometheus.Histogram
	relists       *counter
	dropped       *counter
	decodeErrors  *counter
	syncReads     *counter

	// follow counts, by follower name, what Follow and FollowKeys do
	// (followRewatch, followReset, followError).
	follow [3]*prometheus.CounterVec

	batches, txns, maxBatch atomic.Int64

	// lag holds (revision, commit time) of recent Commits, oldest first,
	// until the cache applies the revision.
	lagMu sync.Mutex
	lag   []lagSample
}

type lagSample struct {
	rev int64
	at  time.Time
}

// maxLagSamples bounds the Commits awaiting their watch event.
const maxLagSamples = 1024

// counter is a Prometheus counter that can also be read.
type counter struct {
	n atomic.Int64
	c prometheus.Counter
}

func (c *counter) Inc() {
	c.n.Add(1)
	c.c.Inc()
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	latency := prometheus.ExponentialBuckets(0.0001, 2, 17) // 100µs .. 6.5s
	m := &metrics{
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_store_commit_seconds", Help: "Time from Commit to its result, including batching.", Buckets: latency}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_store_batch_size", Help: "Txns grouped into one etcd txn.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		txnSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_store_etcd_txn_seconds", Help: "Duration of the batched etcd txn requests.", Buckets: latency}),
		cacheRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_store_cache_revision", Help: "The etcd revision the cache has applied."}),
		watchLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_store_watch_lag_seconds", Help: "Time from a Commit's success to the cache applying its revision.", Buckets: latency}),
		relists: &counter{c: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_store_relists_total", Help: "Cache relists after the watch fell behind etcd's compaction."})},
		dropped: &counter{c: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_store_watchers_dropped_total", Help: "Watch subscribers closed because they fell too far behind."})},
		decodeErrors: &counter{c: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_store_decode_errors_total", Help: "Stored objects the cache could not decode."})},
		syncReads: &counter{c: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_store_sync_reads_total", Help: "Quorum reads of the revision for Sync (concurrent Syncs share one)."})},
	}
	for i, n := range [...]struct{ name, help string }{
		followRewatch: {"rewatches", "Follower watches that their source closed (a slow subscriber dropped) and that were opened again."},
		followReset:   {"resets", "Follower relists (state resets), after the history to resume from was compacted."},
		followError:   {"errors", "Failed follower watches and relists, retried with backoff."},
	} {
		m.follow[i] = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_store_follow_" + n.name + "_total", Help: n.help}, []string{"follower"})
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.commitSeconds, m.batchSize, m.txnSeconds, m.cacheRevision,
		m.watchLag, m.relists.c, m.dropped.c, m.decodeErrors.c, m.syncReads.c, m.follow[0], m.follow[1], m.follow[2]} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}

// What a follower does, counted in metrics.follow.
const (
	followRewatch = iota
	followReset
	followError
)

// batchSent records one etcd txn of n Txns.
func (m *metrics) batchSent(n int, d time.Duration) {
	m.txnSeconds.Observe(d.Seconds())
	m.batchSize.Observe(float64(n))
	m.batches.Add(1)
	m.txns.Add(int64(n))
	for {
		cur := m.maxBatch.Load()
		if int64(n) <= cur || m.maxBatch.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

// committed notes that a Commit wrote revision rev now.
func (m *metrics) committed(rev int64) {
	m.lagMu.Lock()
	defer m.lagMu.Unlock()
	if len(m.lag) < maxLagSamples && (len(m.lag) == 0 || m.lag[len(m.lag)-1].rev < rev) {
		m.lag = append(m.lag, lagSample{rev: rev, at: time.Now()})
	}
}

// applied notes that the cache reached revision rev.
func (m *metrics) applied(rev int64) {
	m.cacheRevision.Set(float64(rev))
	m.lagMu.Lock()
	defer m.lagMu.Unlock()
	i := 0
	for ; i < len(m.lag) && m.lag[i].rev <= rev; i++ {
		m.watchLag.Observe(time.Since(m.lag[i].at).Seconds())
	}
	m.lag = append(m.lag[:0], m.lag[i:]...)
}

// Stats are counters of the Store since New, for tests and benchmark reports.
type Stats struct {
	// Batches is the number of etcd txns Commit sent.
	Batches int64
	// Txns is the number of Txns in those batches.
	Txns int64
	// MaxBatch is the largest number of Txns in one batch.
	MaxBatch int64
	// Relists counts cache relists after compaction.
	Relists int64
	// DroppedWatchers counts subscribers closed for falling behind.
	DroppedWatchers int64
	// DecodeErrors counts stored objects the cache could not decode.
	DecodeErrors int64
	// SyncReads counts the quorum reads that Syncs shared.
	SyncReads int64
}

// Stats returns the Store's counters.
func (s *Store) Stats() Stats {
	m := s.metrics
	return Stats{
		Batches:         m.batches.Load(),
		Txns:            m.txns.Load(),
		MaxBatch:        m.maxBatch.Load(),
		Relists:         m.relists.n.Load(),
		DroppedWatchers: m.dropped.n.Load(),
		DecodeErrors:    m.decodeErrors.n.Load(),
		SyncReads:       m.syncReads.n.Load(),
	}
}
