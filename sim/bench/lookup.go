package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/southbound/udp"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/sim"
	"github.com/weftnet/weft/wire"
)

// LookupConfig configures the on-demand lookup benchmark.
type LookupConfig struct {
	// Rate is the target of lookup queries per second, sent open loop
	// (default 200,000).
	Rate int
	// Batch is the number of queries per LookupRequest (default 1: one
	// datagram per lookup, the ARP-like miss; up to wire.MaxLookupBatch).
	Batch int
	// Clients is the number of hosts asking (default 1,000); they share
	// ClientSockets sockets (default 8), each with a sender and a receiver
	// goroutine.
	Clients, ClientSockets int
	// Endpoints in the Locator's index (default 100,000), spread over
	// EndpointHosts hosts (default 1,000) and 100 VNIs.
	Endpoints, EndpointHosts int
	// Misses is the fraction of queries for addresses that do not exist
	// (default 0.1).
	Misses float64
	// Duration of the run (default 5s); the first second (at most a fifth)
	// is a warm-up left out of the latencies.
	Duration time.Duration
	// Sockets and ReadBatch configure the server (defaults: udp.Config's).
	Sockets, ReadBatch int
	// InProcess runs the clients in this process instead of a child
	// process (see HeartbeatsConfig.InProcess).
	InProcess bool
	// Progress receives one line per second (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

func (c *LookupConfig) setDefaults() {
	setDefault(&c.Rate, 200_000)
	setDefault(&c.Batch, 1)
	setDefault(&c.Clients, 1000)
	setDefault(&c.ClientSockets, 8)
	setDefault(&c.Endpoints, 100_000)
	setDefault(&c.EndpointHosts, 1000)
	setDefault(&c.Misses, 0.1)
	setDefault(&c.Duration, 5*time.Second)
	setDefault(&c.Logger, slog.New(slog.DiscardHandler))
}

func (c *LookupConfig) validate() error {
	switch {
	case c.Rate < 1 || c.Batch < 1 || c.Batch > wire.MaxLookupBatch:
		return fmt.Errorf("lookup: Rate %d, Batch %d: want Rate ≥ 1 and Batch 1..%d", c.Rate, c.Batch, wire.MaxLookupBatch)
	case c.ClientSockets < 1 || c.ClientSockets > 250 || c.Clients < c.ClientSockets:
		return fmt.Errorf("lookup: %d clients on %d sockets: want 1..250 sockets, at least one client each", c.Clients, c.ClientSockets)
	case c.Endpoints < 1 || c.Endpoints > 1<<24 || c.EndpointHosts < 1 || c.EndpointHosts > 1<<16:
		return fmt.Errorf("lookup: %d endpoints on %d hosts: out of range", c.Endpoints, c.EndpointHosts)

	case c.Misses < 0 || c.Misses > 1:
		return fmt.Errorf("lookup: Misses %v out of range 0..1", c.Misses)
	}
	return nil
}

// Goals of the lookup benchmark.
const (
	GoalLookupRate  = 200_000
	GoalLookupP99Ms = 1.0
)

// LookupReport is the result of a lookup run.
type LookupReport struct {
	Bench      string  `json:"bench"`
	TargetRate int     `json:"targetLookupsPerSec"`
	Batch      int     `json:"queriesPerRequest"`
	Clients    int     `json:"clients"`
	Endpoints  int     `json:"endpoints"`
	Misses     float64 `json:"missFraction"`
	Duration   string  `json:"duration"`
	CPUs       int     `json:"cpus"`
	Sockets    int     `json:"serverSockets"`
	ClientMode string  `json:"clientMode"` // "process" or "in-process"

	Sent     uint64 `json:"queriesSent"`
	Answered uint64 `json:"queriesAnswered"`
	Lost     uint64 `json:"queriesLost"`
	Found    uint64 `json:"found"`
	// Rate is answered queries per second over the run.
	Rate     float64 `json:"lookupsPerSec"`
	Requests float64 `json:"requestsPerSec"`
	P50Ms    float64 `json:"p50Ms"`
	P99Ms    float64 `json:"p99Ms"`
	P999Ms   float64 `json:"p999Ms"`
	MaxMs    float64 `json:"maxMs"`
	// ProcessCores is this process's CPU per second: the server's, plus
	// the clients' if they run in-process.
	ProcessCores float64 `json:"processCores"`

	GoalRate  int               `json:"goalLookupsPerSec"`
	GoalP99Ms float64           `json:"goalP99Ms"`
	Rejected  map[string]uint64 `json:"rejected,omitempty"`
}

// Lookup measures the UDP lookup path: clients (each a host with its own
// key) send LookupRequests at a target rate, open loop, to a udp.Server
// whose Locator indexes Endpoints endpoints, verify the replies and
// record each query's latency from send to answer. The clients run in a
// child process (see ChildRoles) unless cfg.InProcess, so that the server's
// CPU is measured alone and the two do not share one Go scheduler.
func Lookup(ctx context.Context, cfg LookupConfig) (*LookupReport, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	progress := progressTo(cfg.Progress)
	rep := &LookupReport{Bench: "lookup", TargetRate: cfg.Rate, Batch: cfg.Batch, Clients: cfg.Clients,
		Endpoints: cfg.Endpoints, Misses: cfg.Misses, Duration: cfg.Duration.String(), CPUs: runtime.NumCPU(),
		ClientMode: "process", GoalRate: GoalLookupRate, GoalP99Ms: GoalLookupP99Ms}
	if cfg.InProcess {
		rep.ClientMode = "in-process"
	}

	src := newStaticSource(cfg.Endpoints, cfg.EndpointHosts, cfg.Clients)
	loc, err := udp.NewLocator(udp.LocatorConfig{Store: src, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := loc.Start(ctx); err != nil {
		return nil, err
	}
	defer loc.Close()
	spec := lookupSpec{Rate: cfg.Rate, Batch: cfg.Batch, Clients: cfg.Clients,
		ClientSockets: cfg.ClientSockets, Endpoints: cfg.Endpoints, Misses: cfg.Misses, Duration: cfg.Duration,
		Seed: []byte("weft lookup bench")}
	keys := hostKeys(spec.Seed, cfg.Clients)
	keyring := wire.KeyringFunc(func(id uint32) ([]byte, bool) {
		if id == 0 || int(id) > cfg.Clients {
			return nil, false
		}
		return keys[id], true
	})
	perHost := cfg.Rate/cfg.Clients + 1
	srv, err := udp.New(udp.Config{Addr: "127.0.0.1:0", Keys: keyring, Locator: loc, Sockets: cfg.Sockets,
		ReadBatch: cfg.ReadBatch, MaxHosts: cfg.Clients + 1,
		RateLimit:       udp.RateLimit{PerSecond: 4 * perHost, Burst: min(udp.MaxBurst, 8*perHost)},
		TenantRateLimit: udp.RateLimit{PerSecond: 4 * cfg.Rate, Burst: min(udp.MaxBurst, 8*cfg.Rate)}, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	defer srv.Close()
	spec.Target = srv.LocalAddr().String()
	rep.Sockets = serverSockets(cfg.Sockets)
	progress("lookup: %d endpoints indexed; %d clients on %d sockets ask %d lookups/s in batches of %d (%.0f%% misses) for %s",
		loc.Len(), cfg.Clients, cfg.ClientSockets, cfg.Rate, cfg.Batch, cfg.Misses*100, cfg.Duration)

	ch, err := startChild(ctx, "lookup clients", roleLookupClients, spec, cfg.InProcess)
	if err != nil {
		return nil, fmt.Errorf("lookup: %w", err)
	}
	start, cpu0 := time.Now(), processCPU()
	var res *lookupResult
	for res == nil && err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case cm, open := <-ch.Messages():
			var m childMsg
			if m, err = childLine(ch, cm, open); err == nil && m.T == "progress" {
				progress("  %s", m.Line)
			}
			res = m.Result
		}
	}
	if cerr := ch.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("lookup: %w", err)
	}
	cpu := processCPU() - cpu0
	secs := time.Since(start).Seconds()

	h := res.hist()
	rep.Sent, rep.Answered, rep.Found = res.Sent, res.Answered, res.Found
	rep.Lost = rep.Sent - min(rep.Sent, rep.Answered)
	rep.Rate = float64(rep.Answered) / res.Secs
	rep.Requests = rep.Rate / float64(cfg.Batch)
	rep.P50Ms, rep.P99Ms, rep.P999Ms, rep.MaxMs = h.percentileMs(50), h.percentileMs(99), h.percentileMs(99.9), float64(h.max)/1e6
	rep.ProcessCores = cpu.Seconds() / secs
	rep.Rejected = srv.Stats().Rejected
	progress("lookup: %.0f lookups/s answered (%d sent, %d lost); p50 %.3fms p99 %.3fms p99.9 %.3fms max %.3fms; this process %.2f cores (%s clients)",
		rep.Rate, rep.Sent, rep.Lost, rep.P50Ms, rep.P99Ms, rep.P999Ms, rep.MaxMs, rep.ProcessCores, rep.ClientMode)
	if rep.Answered == 0 {
		return rep, errors.New("lookup: no query was answered")
	}
	return rep, ctx.Err()
}

// ---- clients: a child (process or in-process) ----

// lookupSpec tells the clients (role lookup-clients) what to do.
type lookupSpec struct {
	Target        string        `json:"target"`
	Rate          int           `json:"rate"`
	Batch         int           `json:"batch"`
	Clients       int           `json:"clients"`
	ClientSockets int           `json:"clientSockets"`
	Endpoints     int           `json:"endpoints"`
	Misses        float64       `json:"misses"`
	Duration      time.Duration `json:"duration"`
	Seed          []byte        `json:"seed"`
}

// lookupResult is what the clients measured; Buckets is the latency
// histogram after the warm-up, sparse (bucket index → count).
type lookupResult struct {
	Sent     uint64         `json:"sent"`
	Answered uint64         `json:"answered"`
	Found    uint64         `json:"found"`
	Secs     float64        `json:"secs"`
	Buckets  map[int]uint64 `json:"buckets"`
	Max      int64          `json:"max"`
}

func (r *lookupResult) hist() *latencyHist {
	h := &latencyHist{max: r.Max}
	for i, c := range r.Buckets {
		if i >= 0 && i < len(h.counts) {
			h.counts[i] += c
			h.n += c
		}
	}
	return h
}

// runLookupClients is the role lookup-clients: it runs the clients
// against spec.Target for spec.Duration, writing "ready" once the sockets
// are open, a "progress" line every second and the "result".
func runLookupClients(ctx context.Context, c sim.ChildIO) error {
	var spec lookupSpec
	if err := json.Unmarshal(c.Spec, &spec); err != nil {
		return fmt.Errorf("lookup clients: %w", err)
	}
	target, err := net.ResolveUDPAddr("udp", spec.Target)
	if err != nil {
		return fmt.Errorf("lookup clients: target: %w", err)
	}
	keys := hostKeys(spec.Seed, spec.Clients)
	clients := make([]*lookupClient, spec.ClientSockets)
	defer func() {
		for _, lc := range clients {
			if lc != nil {
				lc.conn.Close()
			}
		}
	}()
	for i := range clients {
		lc, err := newLookupClient(i, &spec, keys, target)
		if err != nil {
			return err
		}
		clients[i] = lc
	}
	c.Emit(&childMsg{T: "ready"})
	start := time.Now()
	warmEnd := start.Add(min(time.Second, spec.Duration/5))
	deadline := start.Add(spec.Duration)
	var swg, rwg sync.WaitGroup
	recvDone := make(chan struct{})
	for _, lc := range clients {
		lc.start = start
		swg.Go(func() { lc.send(ctx, start, deadline) })
		rwg.Go(func() { lc.receive(warmEnd, recvDone) })
	}
	sendersDone := make(chan struct{})
	go func() { swg.Wait(); close(sendersDone) }()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	var last uint64
	lastT := start
	for running := true; running; {
		select {
		case <-sendersDone:
			running = false
		case now := <-ticker.C:
			var answered uint64
			var h latencyHist
			for _, lc := range clients {
				answered += lc.answered.Load()
				lc.mu.Lock()
				h.merge(&lc.interval)
				lc.interval = latencyHist{}
				lc.mu.Unlock()
			}
			secs := now.Sub(lastT).Seconds()
			c.Emit(&childMsg{T: "progress", Line: fmt.Sprintf("%4.0fs  %9.0f lookups/s answered  p50 %.3fms  p99 %.3fms",
				now.Sub(start).Seconds(), float64(answered-last)/secs, h.percentileMs(50), h.percentileMs(99))})
			last, lastT = answered, now
		}
	}
	end := time.Now()
	// Let the last replies arrive, then stop the receivers.
	time.Sleep(100 * time.Millisecond)
	close(recvDone)
	for _, lc := range clients {
		_ = lc.conn.SetReadDeadline(time.Now())
	}
	rwg.Wait()
	res := &lookupResult{Secs: end.Sub(start).Seconds(), Buckets: map[int]uint64{}}
	var h latencyHist
	for _, lc := range clients {
		res.Sent += lc.sent.Load()
		res.Answered += lc.answered.Load()
		res.Found += lc.found.Load()
		h.merge(&lc.hist)
	}
	for i, n := range h.counts {
		if n != 0 {
			res.Buckets[i] = n
		}
	}
	res.Max = h.max
	c.Emit(&childMsg{T: "result", Result: res})
	return nil
}

// lookupClient is one client socket shared by a subset of the hosts.
type lookupClient struct {
	spec  *lookupSpec
	conn  *net.UDPConn
	pc    *ipv4.PacketConn
	hosts []uint32
	keys  []wire.Key
	ver   *wire.Verifier
	qs    []wire.LookupQuery // the addresses to ask about, misses included
	rng   *rand.Rand

	sentAt []atomic.Int64 // by request ID % len: send time, ns since start
	start  time.Time

	sent, answered, found atomic.Uint64

	hist     latencyHist // after the warm-up; owned by receive
	mu       sync.Mutex
	interval latencyHist // since the last progress line
}

const lookupRing = 1 << 16

func newLookupClient(idx int, spec *lookupSpec, raw [][]byte, target *net.UDPAddr) (*lookupClient, error) {
	c := &lookupClient{spec: spec, keys: make([]wire.Key, len(raw)), sentAt: make([]atomic.Int64, lookupRing),
		rng: rand.New(rand.NewPCG(uint64(idx), 42))}
	for id := idx + 1; id <= spec.Clients; id += spec.ClientSockets {
		c.hosts = append(c.hosts, uint32(id))
		k, err := wire.NewKey(raw[id])
		if err != nil {
			return nil, err
		}
		c.keys[id] = k
	}
	kr := wire.KeyringFunc(func(id uint32) ([]byte, bool) {
		if id == 0 || int(id) >= len(raw) {
			return nil, false
		}
		return raw[id], true
	})
	var err error
	if c.ver, err = wire.NewVerifier(wire.VerifierConfig{Keyring: kr, Accept: wire.ToAgent}); err != nil {
		return nil, err
	}
	c.qs = lookupQueries(spec.Endpoints, spec.Misses, 4096, uint64(idx))
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 2, byte(2+idx))}, target)
	if err != nil {
		return nil, fmt.Errorf("lookup client %d: %w", idx, err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	c.conn, c.pc = conn, ipv4.NewPacketConn(conn)
	return c, nil
}

// send issues requests at this socket's share of the rate until the
// deadline, open loop: what falls behind is sent in a burst.
func (c *lookupClient) send(ctx context.Context, start, deadline time.Time) {
	perSec := float64(c.spec.Rate) / float64(c.spec.ClientSockets) / float64(c.spec.Batch) // requests
	seq := wire.NewSequence(time.Now())
	msgs := make([]ipv4.Message, sendBatch)
	bufs := make([][]byte, sendBatch)
	for i := range msgs {
		bufs[i] = make([]byte, 0, wire.MaxDatagramSize)
		msgs[i].Buffers = [][]byte{nil}
	}
	req := &wire.LookupRequest{Queries: make([]wire.LookupQuery, c.spec.Batch)}
	var reqID uint32
	var sent uint64
	hostIdx := 0
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(deadline) {
			return
		}
		due := uint64(now.Sub(start).Seconds() * perSec)
		for sent < due && time.Now().Before(deadline) {
			n := 0
			for ; n < sendBatch && sent < due; n++ {
				reqID++
				host := c.hosts[hostIdx]
				hostIdx = (hostIdx + 1) % len(c.hosts)
				for q := range req.Queries {
					req.Queries[q] = c.qs[c.rng.IntN(len(c.qs))]
					req.Queries[q].RequestID = reqID
				}
				b, err := wire.Seal(bufs[n][:0], wire.Header{HostID: host, Seq: seq.Next()}, req, &c.keys[host])
				if err != nil {
					panic(fmt.Sprintf("lookup bench: seal: %v", err)) // the queries are built valid
				}
				msgs[n].Buffers[0] = b
				c.sentAt[reqID%lookupRing].Store(int64(time.Since(start)))
				sent++
			}
			if _, err := c.pc.WriteBatch(msgs[:n], 0); err != nil && ctx.Err() == nil {
				continue // dropped: counted as lost
			}
			c.sent.Add(uint64(n * c.spec.Batch))
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// receive reads replies until done is closed, recording each answer's
// latency.
func (c *lookupClient) receive(warmEnd time.Time, done <-chan struct{}) {
	msgs := make([]ipv4.Message, sendBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	var rep wire.LookupReply
	for {
		n, err := c.pc.ReadBatch(msgs, 0)
		if err != nil {
			select {
			case <-done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return
			}
			continue
		}
		now := int64(time.Since(c.start))
		warm := time.Now().After(warmEnd)
		var answered, found uint64
		c.mu.Lock()
		for i := 0; i < n; i++ {
			hdr, body, err := c.ver.Open(msgs[i].Buffers[0][:msgs[i].N])
			if err != nil || hdr.Type != wire.TypeLookupReply || rep.UnmarshalBinary(body) != nil {
				continue
			}
			for _, a := range rep.Answers {
				lat := now - c.sentAt[a.RequestID%lookupRing].Load()
				answered++
				if a.Found {
					found++
				}
				c.interval.add(lat)
				if warm {
					c.hist.add(lat)
				}
			}
		}
		c.mu.Unlock()
		c.answered.Add(answered)
		c.found.Add(found)
	}
}

// ---- a static store for the Locator ----

// staticSource serves a fixed set of hosts and endpoints and no events.
type staticSource struct {
	hosts []apiv1.Object
	eps   []apiv1.Object
	byRef map[apiv1.Ref]apiv1.Object
}

var _ udp.Source = (*staticSource)(nil)

// newStaticSource places endpoints on hosts, in runs of lookupVNIs (one in
// each VNI) per host. The clients are hosts too (host ID i+1 is host hi):
// a host may look up only in the VNIs where it has an endpoint, so a
// client without one in a VNI gets one there, without an address.
func newStaticSource(endpoints, hosts, clients int) *staticSource {
	s := &staticSource{byRef: map[apiv1.Ref]apiv1.Object{}}
	add := func(o apiv1.Object) { s.byRef[apiv1.RefOf(o)] = o }
	for h := range max(hosts, clients) {
		o := &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("h%d", h), ResourceVersion: "1"},
			Spec: apiv1.HostSpec{UnderlayIP: fmt.Sprintf("192.168.%d.%d", h>>8, h&255)}, Status: apiv1.HostStatus{HostID: uint32(h + 1)}}
		s.hosts = append(s.hosts, o)
		add(o)
	}
	member := make([][lookupVNIs]bool, clients)
	for i := 0; i < endpoints; i++ {
		ip, vni := endpointAddr(i)
		h := i / lookupVNIs % hosts
		if h < clients {
			member[h][vni-lookupFirstVNI] = true
		}
		o := &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint),
			Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("ep%d", i), Tenant: "bench", ResourceVersion: "2"},
			Spec:     apiv1.EndpointSpec{Subnet: "s", Host: fmt.Sprintf("h%d", h)},
			Status: apiv1.EndpointStatus{IP: ip.String(), VNI: vni, Host: fmt.Sprintf("h%d", h),
				MAC: fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))}}
		s.eps = append(s.eps, o)
		add(o)
	}
	for h := range member {
		for v, ok := range member[h] {
			if ok {
				continue
			}
			o := &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint),
				Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("member-%d-%d", h, v), Tenant: "bench", ResourceVersion: "2"},
				Spec:     apiv1.EndpointSpec{Subnet: "s", Host: fmt.Sprintf("h%d", h)},
				Status:   apiv1.EndpointStatus{VNI: lookupFirstVNI + uint32(v), Host: fmt.Sprintf("h%d", h)}}
			s.eps = append(s.eps, o)
			add(o)
		}
	}
	return s
}

// The lookup benchmark's endpoints are in lookupVNIs VNIs from
// lookupFirstVNI.
const (
	lookupVNIs     = 100
	lookupFirstVNI = 1000
)

// endpointAddr places endpoint i in one of lookupVNIs VNIs, at 10.x.y.z.
func endpointAddr(i int) (netip.Addr, uint32) {
	n := uint32(i/lookupVNIs) + 1
	return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), lookupFirstVNI + uint32(i%lookupVNIs)
}

// lookupQueries returns n queries over the endpoints, a fraction misses
// of them for addresses that do not exist (in the same VNIs: a host asks
// only in its own).
func lookupQueries(endpoints int, misses float64, n int, seed uint64) []wire.LookupQuery {
	rng := rand.New(rand.NewPCG(seed, 7))
	qs := make([]wire.LookupQuery, n)
	for i := range qs {
		ip, vni := endpointAddr(rng.IntN(endpoints))
		if rng.Float64() < misses {
			a := ip.As4()
			ip = netip.AddrFrom4([4]byte{11, a[1], a[2], a[3]}) // no endpoint lives there
		}
		qs[i] = wire.LookupQuery{VNI: vni, IP: ip}
	}
	return qs
}

func (s *staticSource) ListSelector(kind, _ string, _ func(map[string]string) bool) ([]apiv1.Object, int64) {
	switch kind {
	case apiv1.KindHost:
		return s.hosts, 2
	case apiv1.KindEndpoint:
		return s.eps, 2
	}
	return nil, 2
}

func (s *staticSource) Watch(ctx context.Context, _, _ string, _ int64) (<-chan store.Event, error) {
	return make(chan store.Event), nil // no events, ever
}

func (s *staticSource) Get(kind, tenant, name string) (apiv1.Object, bool) {
	o, ok := s.byRef[apiv1.Ref{Kind: kind, Tenant: tenant, Name: name}]
	return o, ok
}

func (s *staticSource) EndpointsByHost(string) []*apiv1.Endpoint { return nil }
