package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/controller/southbound/udp"
	"github.com/weftnet/weft/sim"
	"github.com/weftnet/weft/wire"
)

// HeartbeatsConfig configures the heartbeat ingest benchmark.
type HeartbeatsConfig struct {
	// Hosts is the number of simulated hosts, IDs 1..Hosts (default 100,000).
	Hosts int
	// Rate is each host's heartbeat rate in the nominal phase, per second
	// (default 1).
	Rate float64
	// Senders is the number of sender goroutines (default 2); each sends
	// from SocketsPerSender sockets on distinct 127.0.0.0/8 addresses, so
	// the flows spread over the server's SO_REUSEPORT sockets (default 8).
	Senders          int
	SocketsPerSender int
	// Duration of each measured phase (default 5s).
	Duration time.Duration
	// Rounds is the number of sink + ingest rounds (default 3).
	Rounds int
	// Sockets and ReadBatch configure the server, sink and ingest alike
	// (defaults: udp.Config's).
	Sockets, ReadBatch int
	// InProcess runs the senders as goroutines of this process (their own
	// threads' CPU time is then subtracted) instead of in a child process
	// (this binary's hidden sim.ChildCommand, which must run ChildRoles).
	InProcess bool
	// Progress receives one line per second (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

func (c *HeartbeatsConfig) setDefaults() {
	setDefault(&c.Hosts, 100_000)
	setDefault(&c.Rate, 1)
	setDefault(&c.Senders, 2)
	setDefault(&c.SocketsPerSender, 8)
	setDefault(&c.Duration, 5*time.Second)
	setDefault(&c.Rounds, 3)
	setDefault(&c.Logger, slog.New(slog.DiscardHandler))
}

func (c *HeartbeatsConfig) validate() error {
	switch {
	case c.Hosts < 1 || c.Hosts > 1<<24:
		return fmt.Errorf("heartbeats: Hosts %d out of range 1..2^24", c.Hosts)
	case c.Senders*c.SocketsPerSender > 250 || c.Senders < 1 || c.SocketsPerSender < 1:
		return fmt.Errorf("heartbeats: %d senders × %d sockets: want 1..250 sockets", c.Senders, c.SocketsPerSender)
	case c.Rate < 0 || c.Duration < 0 || c.Rounds < 0:
		return errors.New("heartbeats: Rate, Duration and Rounds must not be negative")
	}
	return nil
}

// Goals of the heartbeat benchmark (ARCHITECTURE.md, "The numbers").
const (
	GoalIngestRatio     = 0.8
	GoalCoresAt100k     = 0.5
	GoalDeadDetectSecs  = 3.0
	heartbeatPoolPerSec = 400_000 // pre-built datagrams per second of blast
	heartbeatPoolMax    = 3_000_000
)

// HeartbeatsReport is the result of a heartbeat run.
type HeartbeatsReport struct {
	Bench      string `json:"bench"`
	Hosts      int    `json:"hosts"`
	Senders    int    `json:"senders"`
	Flows      int    `json:"flows"`
	SenderMode string `json:"senderMode"` // "process" or "in-process"
	Sockets    int    `json:"sockets"`
	ReadBatch  int    `json:"readBatch"`
	Duration   string `json:"duration"`
	CPUs       int    `json:"cpus"`

	// Capacity: the senders blast pre-signed heartbeats as fast as they
	// can, first at a raw sink (read and count), then at the real ingest
	// (verify and record in the liveness table).
	// The rates and the ratio are the medians over the rounds.
	Rounds          []HeartbeatsRound `json:"rounds"`
	SinkRate        float64           `json:"sinkDatagramsPerSec"`
	IngestRate      float64           `json:"ingestDatagramsPerSec"`
	IngestRatio     float64           `json:"ingestToSinkRatio"`
	GoalIngestRatio float64           `json:"goalIngestToSinkRatio"`
	// IngestCPUMicros is the controller side's CPU per heartbeat while
	// blasted (median over the rounds), in µs.
	IngestCPUMicros float64 `json:"ingestCpuMicrosPerHeartbeat"`

	// Nominal: every host heartbeats at Rate; Cores is the CPU the
	// controller side (readers, verification, liveness sweeper, runtime)
	// used, senders excluded.
	NominalRate      float64 `json:"nominalDatagramsPerSec"`
	NominalAccepted  uint64  `json:"nominalAccepted"`
	Cores            float64 `json:"coresAtNominal"`
	NominalCPUMicros float64 `json:"nominalCpuMicrosPerHeartbeat"`
	GoalCores        float64 `json:"goalCoresAt100kHosts"`

	// One host stops; time from its last heartbeat (and from the moment
	// the sender stopped it) until the table declares it Dead.
	DeadDetectSecs     float64 `json:"deadHostDetectionSec"`
	DeadAfterStopSecs  float64 `json:"deadHostAfterStopSec"`
	GoalDeadDetectSecs float64 `json:"goalDeadHostDetectionSec"`

	Rejected map[string]uint64 `json:"rejected,omitempty"`
}

// HeartbeatsRound is one sink phase and one ingest phase.
// Cores are the controller side's (this process's) CPU during the phase.
type HeartbeatsRound struct {
	SinkSent    uint64  `json:"sinkSent"`
	SinkRate    float64 `json:"sinkDatagramsPerSec"`
	SinkCores   float64 `json:"sinkCores"`
	IngestSent  uint64  `json:"ingestSent"`
	IngestRate  float64 `json:"ingestDatagramsPerSec"`
	IngestCores float64 `json:"ingestCores"`
	Ratio       float64 `json:"ratio"`
}

// Heartbeats measures heartbeat ingest: capacity against a raw UDP sink
// with the same senders and socket setup, the CPU used at the nominal
// rate, and dead-host detection. See HeartbeatsConfig.
func Heartbeats(ctx context.Context, cfg HeartbeatsConfig) (*HeartbeatsReport, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	progress := progressTo(cfg.Progress)
	seed := make([]byte, 16)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("heartbeats: seed: %w", err)
	}
	keys := hostKeys(seed, cfg.Hosts)
	keyring := wire.KeyringFunc(func(id uint32) ([]byte, bool) {
		if id == 0 || int(id) > cfg.Hosts {
			return nil, false
		}
		return keys[id], true
	})
	rep := &HeartbeatsReport{
		Bench: "heartbeats", Hosts: cfg.Hosts, Senders: cfg.Senders, Flows: cfg.Senders * cfg.SocketsPerSender,
		SenderMode: "process", Duration: cfg.Duration.String(), CPUs: runtime.NumCPU(),
		GoalIngestRatio: GoalIngestRatio, GoalCores: GoalCoresAt100k, GoalDeadDetectSecs: GoalDeadDetectSecs,
	}
	if cfg.InProcess {
		rep.SenderMode = "in-process"
	}
	spec := senderSpec{
		LockThreads: cfg.InProcess, Hosts: cfg.Hosts, Seed: seed, Senders: cfg.Senders,
		SocketsPerSender: cfg.SocketsPerSender, Duration: cfg.Duration,
		Pool: min(heartbeatPoolMax, max(10_000, int(heartbeatPoolPerSec*cfg.Duration.Seconds()))),
	}

	// The raw sink and the real ingest listen side by side; the senders
	// blast one, then the other, Rounds times, so that a change in the
	// machine's load hits both alike.
	sink, err := udp.New(udp.Config{Addr: "127.0.0.1:0", Discard: true, Sockets: cfg.Sockets, ReadBatch: cfg.ReadBatch, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := sink.Start(ctx); err != nil {
		return nil, fmt.Errorf("heartbeats: start sink: %w", err)
	}
	defer sink.Close()
	rep.Sockets, rep.ReadBatch = serverSockets(cfg.Sockets), cfg.ReadBatch
	if rep.ReadBatch == 0 {
		rep.ReadBatch = udp.DefaultReadBatch
	}

	stopHost := uint32(1)
	dead := make(chan liveness.Transition, 1)
	// Hosts die between the phases (their senders restart); only a death
	// after the nominal phase started counts.
	var armedAt atomic.Pointer[time.Time]
	table, err := liveness.New(liveness.Config{
		Capacity: cfg.Hosts + 1, Logger: cfg.Logger,
		Sink: liveness.SinkFunc(func(_ context.Context, ts []liveness.Transition) error {
			for _, t := range ts {
				if at := armedAt.Load(); at != nil && t.HostID == stopHost && t.To == liveness.Dead && t.LastSeen.After(*at) {
					select {
					case dead <- t:
					default:
					}
				}
			}
			return nil
		}),
	})
	if err != nil {
		return nil, err
	}
	defer table.Close()
	if err := table.Start(ctx); err != nil {
		return nil, err
	}
	srv, err := udp.New(udp.Config{Addr: "127.0.0.1:0", Keys: keyring, Liveness: table, Sockets: cfg.Sockets,
		ReadBatch: cfg.ReadBatch, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, fmt.Errorf("heartbeats: start ingest: %w", err)
	}
	defer srv.Close()
	progress("raw sink on %s, ingest (verify + liveness) on %s: %d sockets each, read batch %d; %d hosts blast from %d flows, %s per phase, %d rounds",
		sink.LocalAddr(), srv.LocalAddr(), rep.Sockets, rep.ReadBatch, cfg.Hosts, rep.Flows, cfg.Duration, cfg.Rounds)
	var sinkRates, ingestRates, ratios, perDatagram []float64
	for round := 1; round <= cfg.Rounds; round++ {
		spec.Target = sink.LocalAddr().String()
		res, err := runSenders(ctx, cfg.InProcess, spec, func() uint64 { return sink.Stats().Received }, progress, "sink")
		if err != nil {
			return nil, err
		}
		settle(ctx, func() uint64 { return sink.Stats().Received })
		r := HeartbeatsRound{SinkSent: res.sent, SinkRate: res.rate, SinkCores: res.cores}
		spec.Target = srv.LocalAddr().String()
		res, err = runSenders(ctx, cfg.InProcess, spec, func() uint64 { return srv.Stats().Heartbeats }, progress, "ingest")
		if err != nil {
			return nil, err
		}
		settle(ctx, func() uint64 { return srv.Stats().Received })
		r.IngestSent, r.IngestRate, r.IngestCores = res.sent, res.rate, res.cores
		if r.SinkRate > 0 {
			r.Ratio = r.IngestRate / r.SinkRate
		}
		progress("round %d: sink %.0f datagrams/s on %.2f cores, ingest %.0f heartbeats/s verified on %.2f cores: %.2f of the sink",
			round, r.SinkRate, r.SinkCores, r.IngestRate, r.IngestCores, r.Ratio)
		rep.Rounds = append(rep.Rounds, r)
		sinkRates, ingestRates, ratios = append(sinkRates, r.SinkRate), append(ingestRates, r.IngestRate), append(ratios, r.Ratio)
		if r.IngestRate > 0 {
			perDatagram = append(perDatagram, r.IngestCores/r.IngestRate*1e6)
		}
	}
	rep.SinkRate, rep.IngestRate, rep.IngestRatio = median(sinkRates), median(ingestRates), median(ratios)
	rep.IngestCPUMicros = median(perDatagram)

	nominal := spec
	nominal.Target = srv.LocalAddr().String()
	nominal.Rate = cfg.Rate
	nominal.Duration = max(cfg.Duration, time.Second)
	nominal.StopHost = stopHost
	nominal.StopAfter = min(time.Second, nominal.Duration/4)
	progress("nominal: %d hosts × %.3g Hz for %s; host %d stops after %s", cfg.Hosts, cfg.Rate, nominal.Duration, stopHost, nominal.StopAfter)
	now := time.Now()
	armedAt.Store(&now)
	res, err := runSenders(ctx, cfg.InProcess, nominal, func() uint64 { return srv.Stats().Heartbeats }, progress, "nominal")
	if err != nil {
		return nil, err
	}
	rep.NominalRate, rep.NominalAccepted, rep.Cores = res.rate, res.counted, res.cores
	if res.rate > 0 {
		rep.NominalCPUMicros = res.cores / res.rate * 1e6
	}
	progress("nominal: %.0f heartbeats/s on %.3f cores", res.rate, res.cores)
	select {
	case t := <-dead:
		rep.DeadDetectSecs = t.At.Sub(t.LastSeen).Seconds()
		if !res.stoppedAt.IsZero() {
			rep.DeadAfterStopSecs = t.At.Sub(res.stoppedAt).Seconds()
		}
		progress("dead host: detected %.2fs after its last heartbeat", rep.DeadDetectSecs)
	case <-time.After(liveness.DefaultDeadAfter + 5*time.Second):
		return rep, errors.New("heartbeats: the stopped host was never declared dead")
	case <-ctx.Done():
		return rep, ctx.Err()
	}
	rep.Rejected = srv.Stats().Rejected
	return rep, nil
}

// settle waits until a server has read its backlog (count stops
// growing), so that a phase does not start with the previous one's
// datagrams still queued: they would be counted in the wrong phase, and
// verified after newer ones from the same hosts (replays).
func settle(ctx context.Context, count func() uint64) {
	// Still for quiet samples in a row: one still sample on a loaded
	// machine is as likely a reader not scheduled as a backlog read.
	const quiet = 4
	last, still := count(), 0
	for i := 0; i < 200 && ctx.Err() == nil && still < quiet; i++ {
		time.Sleep(50 * time.Millisecond)
		n := count()
		if n == last {
			still++
		} else {
			still = 0
		}
		last = n
	}
}

// ---- senders: a child (process or in-process) ----

// senderSpec tells the senders (role heartbeat-senders) what to do.
type senderSpec struct {
	Target           string        `json:"target"`
	Hosts            int           `json:"hosts"`
	Seed             []byte        `json:"seed"`
	Senders          int           `json:"senders"`
	SocketsPerSender int           `json:"socketsPerSender"`
	Rate             float64       `json:"rate"` // per host; 0: blast the pool
	Duration         time.Duration `json:"duration"`
	Pool             int           `json:"pool"` // pre-built datagrams for a blast
	StopHost         uint32        `json:"stopHost,omitempty"`
	StopAfter        time.Duration `json:"stopAfter,omitempty"`
	// LockThreads runs every sender goroutine on its own OS thread and
	// reports those threads' CPU time (in-process senders, whose CPU the
	// parent subtracts from its own).
	LockThreads bool `json:"lockThreads,omitempty"`
}

// phaseResult is what the parent measured during one sender run.
type phaseResult struct {
	sent      uint64  // datagrams the senders sent
	counted   uint64  // datagrams the server counted in the window
	rate      float64 // counted per second of the window
	cores     float64 // this process's CPU (minus in-process senders) per second, after a warm-up
	stoppedAt time.Time
}

// runSenders runs one sender phase, in a child process unless inProcess,
// and measures count() over it.
func runSenders(ctx context.Context, inProcess bool, spec senderSpec, count func() uint64,
	progress func(string, ...any), phase string) (*phaseResult, error) {
	ch, err := startChild(ctx, "heartbeat senders", roleHeartbeatSenders, spec, inProcess)
	if err != nil {
		return nil, fmt.Errorf("heartbeats: %s phase: %w", phase, err)
	}
	res, err := measure(ctx, spec, ch, count, progress, phase)
	if cerr := ch.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("heartbeats: %s phase: %w", phase, err)
	}
	if res.senderCPU > 0 && res.cores > 0 {
		// In-process: the senders' threads measured their own CPU over the
		// same window (approximately: from start to done).
		res.cores = max(0, res.cores-res.senderCPU.Seconds()/res.windowSecs)
	}
	return &res.phaseResult, nil
}

type measured struct {
	phaseResult
	windowSecs float64
	senderCPU  time.Duration
}

// measure follows the senders' lines: the count between "start" and
// "done" gives the rate; CPU is measured from a warm-up after "start".
func measure(ctx context.Context, spec senderSpec, ch *sim.Child, count func() uint64,
	progress func(string, ...any), phase string) (measured, error) {
	var (
		res                 measured
		start, warm         time.Time
		startCount          uint64
		warmCPU             time.Duration
		lastCount           uint64
		tick                = time.NewTicker(time.Second)
		warmup              = min(time.Second, spec.Duration/4)
		warmTimer           <-chan time.Time
		lastTick            time.Time
		lastCPU             time.Duration
		measuring, warmedUp bool
	)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case cm, open := <-ch.Messages():
			now := time.Now()
			m, err := childLine(ch, cm, open)
			if err != nil {
				return res, err
			}
			switch m.T {
			case "start":
				start, startCount = now, count()
				lastTick, lastCount, lastCPU = start, startCount, processCPU()
				measuring = true
				warmTimer = time.After(warmup)
			case "stopped":
				res.stoppedAt = now
			case "done":
				n := count()
				res.sent, res.senderCPU = m.N, m.CPU
				res.counted = n - startCount
				res.windowSecs = now.Sub(start).Seconds()
				if res.windowSecs > 0 {
					res.rate = float64(res.counted) / res.windowSecs
				}
				if warmedUp && now.After(warm) {
					res.cores = (processCPU() - warmCPU).Seconds() / now.Sub(warm).Seconds()
				}
				return res, nil
			}
		case now := <-warmTimer:
			warm, warmCPU, warmedUp = now, processCPU(), true
		case now := <-tick.C:
			if !measuring {
				continue
			}
			n, cpu := count(), processCPU()
			secs := now.Sub(lastTick).Seconds()
			progress("  %s %4.0fs  %9.0f datagrams/s  %5.3f cores (this process)", phase, now.Sub(start).Seconds(),
				float64(n-lastCount)/secs, (cpu-lastCPU).Seconds()/secs)
			lastTick, lastCount, lastCPU = now, n, cpu
		}
	}
}

// sendHeartbeats is the role heartbeat-senders: it runs the senders of one
// phase (senderSpec) and writes "ready" (pools built, sockets open),
// "start" (sending), "stopped" (StopHost skipped) and "done" (with the
// datagrams sent).
func sendHeartbeats(ctx context.Context, c sim.ChildIO) error {
	var spec senderSpec
	if err := json.Unmarshal(c.Spec, &spec); err != nil {
		return fmt.Errorf("heartbeat senders: %w", err)
	}
	keys := hostKeys(spec.Seed, spec.Hosts)
	prepared := make([]wire.Key, len(keys))
	for id := 1; id < len(keys); id++ {
		k, err := wire.NewKey(keys[id])
		if err != nil {
			return err
		}
		prepared[id] = k
	}
	target, err := net.ResolveUDPAddr("udp", spec.Target)
	if err != nil {
		return fmt.Errorf("senders: target: %w", err)
	}
	senders := make([]*hbSender, spec.Senders)
	defer func() {
		for _, s := range senders {
			if s != nil {
				s.close()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make([]error, len(senders))
	for i := range senders {
		s := &hbSender{idx: i, spec: &spec, keys: prepared}
		senders[i] = s
		wg.Go(func() { errs[i] = s.prepare(target) }) // sockets and pools in parallel
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.Emit(&childMsg{T: "ready"})
	var (
		sent    atomic.Uint64
		cpu     atomic.Int64
		stopped sync.Once
	)
	start := time.Now()
	deadline := start.Add(spec.Duration)
	c.Emit(&childMsg{T: "start"})
	for _, s := range senders {
		wg.Go(func() {
			if spec.LockThreads {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				t0 := threadCPU()
				defer func() { cpu.Add(int64(threadCPU() - t0)) }()
			}
			var n uint64
			if spec.Rate > 0 {
				n = s.paced(ctx, start, deadline, func() { stopped.Do(func() { c.Emit(&childMsg{T: "stopped", N: uint64(spec.StopHost)}) }) })
			} else {
				n = s.blast(ctx, deadline)
			}
			sent.Add(n)
		})
	}
	wg.Wait()
	c.Emit(&childMsg{T: "done", N: sent.Load(), CPU: time.Duration(cpu.Load())})
	return nil
}

// hbSender is one sender goroutine: sockets on its own loopback addresses,
// each carrying a fixed subset of hosts (so that a host's datagrams stay
// in order on one flow).
type hbSender struct {
	idx   int
	spec  *senderSpec
	keys  []wire.Key
	conns []*net.UDPConn
	pcs   []*ipv4.PacketConn
	// hosts[j] are the hosts of socket j.
	hosts [][]uint32
	// pools[j] are socket j's pre-built datagrams (blast), back to back.
	pools [][]byte
	dlen  int // datagram length
}

func (s *hbSender) prepare(target *net.UDPAddr) error {
	k := s.spec.SocketsPerSender
	s.hosts = make([][]uint32, k)
	for id := s.idx + 1; id <= s.spec.Hosts; id += s.spec.Senders {
		j := ((id - 1) / s.spec.Senders) % k
		s.hosts[j] = append(s.hosts[j], uint32(id))
	}
	for j := 0; j < k; j++ {
		src := &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(2+s.idx*k+j))}
		c, err := net.DialUDP("udp", src, target)
		if err != nil {
			return fmt.Errorf("senders: dial %s from %s: %w", target, src, err)
		}
		_ = c.SetWriteBuffer(4 << 20)
		s.conns = append(s.conns, c)
		s.pcs = append(s.pcs, ipv4.NewPacketConn(c))
	}
	if s.spec.Rate > 0 {
		return nil
	}
	// Blast: pre-build this sender's share of the pool, round robin over
	// each socket's hosts, with increasing sequence numbers.
	seq := wire.NewSequence(time.Now())
	hb := &wire.Heartbeat{ViewVersion: 1, Health: wire.HealthReady}
	per := s.spec.Pool / s.spec.Senders / k
	s.pools = make([][]byte, k)
	for j := 0; j < k; j++ {
		hosts := s.hosts[j]
		if len(hosts) == 0 {
			continue
		}
		var pool []byte
		for i := 0; i < per; i++ {
			id := hosts[i%len(hosts)]
			before := len(pool)
			var err error
			pool, err = wire.Seal(pool, wire.Header{HostID: id, Seq: seq.Next()}, hb, &s.keys[id])
			if err != nil {
				return err
			}
			s.dlen = len(pool) - before
		}
		s.pools[j] = pool
	}
	return nil
}

func (s *hbSender) close() {
	for _, c := range s.conns {
		c.Close()
	}
}

// blast sends the pools as fast as the sockets take them, until the
// deadline or the pools are used up.
func (s *hbSender) blast(ctx context.Context, deadline time.Time) uint64 {
	msgs := make([]ipv4.Message, sendBatch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	off := make([]int, len(s.pools))
	var sent uint64
	for ctx.Err() == nil && time.Now().Before(deadline) {
		progressed := false
		for j, pool := range s.pools {
			n := 0
			for ; n < sendBatch && off[j]+s.dlen <= len(pool); n++ {
				msgs[n].Buffers[0] = pool[off[j] : off[j]+s.dlen]
				off[j] += s.dlen
			}
			if n == 0 {
				continue
			}
			progressed = true
			if w, err := s.pcs[j].WriteBatch(msgs[:n], 0); err == nil {
				sent += uint64(w)
			}
		}
		if !progressed {
			break // pool used up
		}
	}
	return sent
}

// paced sends every host's heartbeat at spec.Rate, spreading the hosts
// over 10 ms slots, signing on the fly. onStop is called when StopHost is
// first skipped.
func (s *hbSender) paced(ctx context.Context, start, deadline time.Time, onStop func()) uint64 {
	const slot = 10 * time.Millisecond
	period := time.Duration(float64(time.Second) / s.spec.Rate)
	slots := max(1, int(period/slot))
	// bySlot[j][k]: socket j's hosts that send in slot k.
	bySlot := make([][][]uint32, len(s.hosts))
	for j, hosts := range s.hosts {
		bySlot[j] = make([][]uint32, slots)
		for _, id := range hosts {
			k := int(id) % slots
			bySlot[j][k] = append(bySlot[j][k], id)
		}
	}
	seq := wire.NewSequence(time.Now())
	hb := &wire.Heartbeat{ViewVersion: 1, Health: wire.HealthReady}
	buf := make([]byte, 0, sendBatch*128)
	msgs := make([]ipv4.Message, sendBatch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	var sent uint64
	next := 0 // next slot tick to run
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(deadline) {
			break
		}
		due := int(now.Sub(start) / slot)
		stop := s.spec.StopHost != 0 && now.Sub(start) >= s.spec.StopAfter
		for ; next <= due; next++ {
			k := next % slots
			for j := range bySlot {
				n := 0
				buf = buf[:0]
				flush := func() {
					if n > 0 {
						if w, err := s.pcs[j].WriteBatch(msgs[:n], 0); err == nil {
							sent += uint64(w)
						}
						n, buf = 0, buf[:0]
					}
				}
				for _, id := range bySlot[j][k] {
					if stop && id == s.spec.StopHost {
						onStop()
						continue
					}
					before := len(buf)
					out, err := wire.Seal(buf, wire.Header{HostID: id, Seq: seq.Next()}, hb, &s.keys[id])
					if err != nil {
						continue
					}
					buf = out
					msgs[n].Buffers[0] = buf[before:len(buf):len(buf)]
					n++
					if n == sendBatch {
						flush()
					}
				}
				flush()
			}
		}
		time.Sleep(time.Until(start.Add(time.Duration(next) * slot)))
	}
	return sent
}
