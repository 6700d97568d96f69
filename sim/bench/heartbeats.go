package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/controller/southbound/udp"
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
	// threads' CPU time is then subtracted) instead of in a child process.
	// A child re-executes this binary, whose main must call RunChild; if it
	// does not, the benchmark falls back to in-process senders.
	InProcess bool
	// Progress receives one line per second (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

func (c *HeartbeatsConfig) setDefaults() {
	if c.Hosts == 0 {
		c.Hosts = 100_000
	}
	if c.Rate == 0 {
		c.Rate = 1
	}
	if c.Senders == 0 {
		c.Senders = 2
	}
	if c.SocketsPerSender == 0 {
		c.SocketsPerSender = 8
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Rounds == 0 {
		c.Rounds = 3
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
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

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Heartbeats measures heartbeat ingest: capacity against a raw UDP sink
// with the same senders and socket setup, the CPU used at the nominal
// rate, and dead-host detection. See HeartbeatsConfig.
func Heartbeats(ctx context.Context, cfg HeartbeatsConfig) (*HeartbeatsReport, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	progress := func(format string, a ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", a...)
		}
	}
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
		Role: roleHeartbeatSenders, Hosts: cfg.Hosts, Seed: seed, Senders: cfg.Senders,
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
	rep.Sockets, rep.ReadBatch = socketsOf(cfg), readBatchOf(cfg)

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
		res, err := runSenders(ctx, &cfg, spec, &rep.SenderMode, func() uint64 { return sink.Stats().Received }, progress, "sink")
		if err != nil {
			return nil, err
		}
		settle(ctx, func() uint64 { return sink.Stats().Received })
		r := HeartbeatsRound{SinkSent: res.sent, SinkRate: res.rate, SinkCores: res.cores}
		spec.Target = srv.LocalAddr().String()
		res, err = runSenders(ctx, &cfg, spec, &rep.SenderMode, func() uint64 { return srv.Stats().Heartbeats }, progress, "ingest")
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
	res, err := runSenders(ctx, &cfg, nominal, &rep.SenderMode, func() uint64 { return srv.Stats().Heartbeats }, progress, "nominal")
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
	last := count()
	for i := 0; i < 100 && ctx.Err() == nil; i++ {
		time.Sleep(50 * time.Millisecond)
		n := count()
		if n == last {
			return
		}
		last = n
	}
}

func socketsOf(cfg HeartbeatsConfig) int {
	if cfg.Sockets > 0 {
		return cfg.Sockets
	}
	return runtime.GOMAXPROCS(0)
}

func readBatchOf(cfg HeartbeatsConfig) int {
	if cfg.ReadBatch > 0 {
		return cfg.ReadBatch
	}
	return udp.DefaultReadBatch
}

// hostKeys derives host i's raw key (index i; index 0 unused).
func hostKeys(seed []byte, hosts int) [][]byte {
	keys := make([][]byte, hosts+1)
	buf := make([]byte, len(seed)+4)
	copy(buf, seed)
	for id := 1; id <= hosts; id++ {
		binary.BigEndian.PutUint32(buf[len(seed):], uint32(id))
		k := sha256.Sum256(buf)
		keys[id] = k[:]
	}
	return keys
}

// ---- senders: in a child process or in-process ----

// ChildEnv is the environment variable that makes a re-executed binary
// run a benchmark's load generator (RunChild) instead of its main.
const ChildEnv = "WEFT_BENCH_CHILD"

const roleHeartbeatSenders = "heartbeat-senders"

// senderSpec tells the senders what to do; a child gets it as JSON in
// ChildEnv.
type senderSpec struct {
	Role             string        `json:"role"`
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
}

// RunChild runs a benchmark's load generator if this process was started
// as one (ChildEnv is set), and reports whether it was. A binary that runs
// benchmarks calls it first thing in main (and a test binary in TestMain)
// and exits when it returns true:
//
//	if ok, err := bench.RunChild(ctx); ok {
//		if err != nil { fmt.Fprintln(os.Stderr, err); os.Exit(1) }
//		os.Exit(0)
//	}
//
// The child writes its progress to stdout, one line per event.
func RunChild(ctx context.Context) (bool, error) {
	env := os.Getenv(ChildEnv)
	if env == "" {
		return false, nil
	}
	var role struct {
		Role string `json:"role"`
	}
	if err := json.Unmarshal([]byte(env), &role); err != nil {
		return true, fmt.Errorf("bench child: decode %s: %w", ChildEnv, err)
	}
	out := &lineWriter{w: os.Stdout}
	switch role.Role {
	case roleHeartbeatSenders:
		var spec senderSpec
		if err := json.Unmarshal([]byte(env), &spec); err != nil {
			return true, fmt.Errorf("bench child: decode %s: %w", ChildEnv, err)
		}
		_, err := sendHeartbeats(ctx, spec, out.event, false)
		return true, err
	case roleLookupClients:
		var spec lookupSpec
		if err := json.Unmarshal([]byte(env), &spec); err != nil {
			return true, fmt.Errorf("bench child: decode %s: %w", ChildEnv, err)
		}
		return true, lookupChild(ctx, spec, out)
	}
	return true, fmt.Errorf("bench child: unknown role %q", role.Role)
}

// lineWriter writes events as lines, from any goroutine.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) event(name string, v uint64) { l.line(name, strconv.FormatUint(v, 10)) }

func (l *lineWriter) line(name, payload string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s%s %s\n", childLinePrefix, name, payload)
}

// Child events, one per line after childLinePrefix: "ready 0" (pools
// built, sockets open), then for heartbeat senders "start 0" (sending),
// "stopped HOSTID", "done SENT".
const (
	evReady   = "ready"
	evStart   = "start"
	evStopped = "stopped"
	evDone    = "done"
)

// phaseResult is what the parent measured during one sender run.
type phaseResult struct {
	sent      uint64  // datagrams the senders sent
	counted   uint64  // datagrams the server counted in the window
	rate      float64 // counted per second of the window
	cores     float64 // this process's CPU (minus in-process senders) per second, after a warm-up
	stoppedAt time.Time
}

// runSenders runs one sender phase (in a child process unless cfg says or
// finds otherwise) and measures count() over it.
func runSenders(ctx context.Context, cfg *HeartbeatsConfig, spec senderSpec, mode *string, count func() uint64,
	progress func(string, ...any), phase string) (*phaseResult, error) {
	events := make(chan senderEvent, 16)
	var (
		wait      func() error
		senderCPU func() time.Duration
	)
	if *mode == "process" {
		w, err := startChild(ctx, spec, func(name, payload string) {
			if ev, ok := heartbeatEvent(name, payload); ok {
				events <- ev
			}
		})
		if err == nil {
			wait = w
		} else if errors.Is(err, errNoChildHook) {
			progress("%s: the binary does not run bench children (main must call bench.RunChild): senders run in-process", phase)
			*mode = "in-process"
		} else {
			return nil, err
		}
	}
	if *mode == "in-process" {
		var cpu atomic.Int64
		done := make(chan error, 1)
		go func() {
			emit := func(name string, v uint64) { events <- senderEvent{name: name, v: v, at: time.Now()} }
			threads, err := sendHeartbeats(ctx, spec, emit, true)
			cpu.Store(int64(threads))
			done <- err
		}()
		wait = func() error { return <-done }
		senderCPU = func() time.Duration { return time.Duration(cpu.Load()) }
	}
	res, err := measure(ctx, spec, events, count, progress, phase)
	werr := wait()
	if err == nil {
		err = werr
	}
	if err != nil {
		return nil, fmt.Errorf("heartbeats: %s phase: %w", phase, err)
	}
	if senderCPU != nil && res.cores > 0 {
		// In-process: the senders' threads measured their own CPU over the
		// same window (approximately: from start to done).
		res.cores = max(0, res.cores-senderCPU().Seconds()/res.windowSecs)
	}
	return &res.phaseResult, nil
}

type senderEvent struct {
	name string
	v    uint64
	at   time.Time
}

type measured struct {
	phaseResult
	windowSecs float64
}

// measure follows the sender events: the count between "start" and
// "done" gives the rate; CPU is measured from a warm-up after "start".
func measure(ctx context.Context, spec senderSpec, events <-chan senderEvent, count func() uint64,
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
		case ev, ok := <-events:
			if !ok {
				return res, errors.New("senders ended before they were done")
			}
			switch ev.name {
			case evStart:
				start, startCount = ev.at, count()
				lastTick, lastCount, lastCPU = start, startCount, processCPU()
				measuring = true
				warmTimer = time.After(warmup)
			case evStopped:
				res.stoppedAt = ev.at
			case evDone:
				end, n := ev.at, count()
				res.sent = ev.v
				res.counted = n - startCount
				res.windowSecs = end.Sub(start).Seconds()
				if res.windowSecs > 0 {
					res.rate = float64(res.counted) / res.windowSecs
				}
				if warmedUp && end.After(warm) {
					res.cores = (processCPU() - warmCPU).Seconds() / end.Sub(warm).Seconds()
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

// processCPU returns this process's user + system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var errNoChildHook = errors.New("bench child: the binary does not call bench.RunChild")

// startChild re-executes this binary as a sender and forwards its events.
// It returns once the child said "ready", with a function that waits for
// its exit.
func startChild(ctx context.Context, spec any, onLine func(name, payload string)) (func() error, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench child: %w", err)
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("bench child: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), ChildEnv+"="+string(js))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench child: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench child: start %s: %w", exe, err)
	}
	lines := bufio.NewScanner(out)
	lines.Buffer(make([]byte, 64<<10), 16<<20)
	ready := make(chan bool, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sawReady := false
		for lines.Scan() {
			name, payload, ok := parseChildLine(lines.Text())
			switch {
			case !ok:
				// Not ours: a binary that ignored ChildEnv.
			case name == evReady && !sawReady:
				sawReady = true
				ready <- true
			case sawReady:
				onLine(name, payload)
			}
		}
		if !sawReady {
			ready <- false
		}
	}()
	if !<-ready {
		<-readDone
		werr := cmd.Wait()
		if werr == nil {
			return nil, errNoChildHook
		}
		return nil, fmt.Errorf("bench child: %w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	return func() error {
		<-readDone
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("bench child: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}, nil
}

// childLinePrefix starts every line a child writes for its parent.
const childLinePrefix = "weft-bench "

func parseChildLine(line string) (name, payload string, ok bool) {
	rest, ok := strings.CutPrefix(line, childLinePrefix)
	if !ok {
		return "", "", false
	}
	name, payload, _ = strings.Cut(rest, " ")
	return name, payload, name != ""
}

// heartbeatEvent turns a sender child's line into an event.
func heartbeatEvent(name, payload string) (senderEvent, bool) {
	switch name {
	case evStart, evStopped, evDone:
	default:
		return senderEvent{}, false
	}
	v, err := strconv.ParseUint(payload, 10, 64)
	return senderEvent{name: name, v: v, at: time.Now()}, err == nil
}

// sendHeartbeats runs the senders of one phase and reports events through
// emit. With lockThreads, every sender goroutine runs on its own OS
// thread and the sum of those threads' CPU time is returned.
func sendHeartbeats(ctx context.Context, spec senderSpec, emit func(string, uint64), lockThreads bool) (time.Duration, error) {
	keys := hostKeys(spec.Seed, spec.Hosts)
	prepared := make([]wire.Key, len(keys))
	for id := 1; id < len(keys); id++ {
		k, err := wire.NewKey(keys[id])
		if err != nil {
			return 0, err
		}
		prepared[id] = k
	}
	target, err := net.ResolveUDPAddr("udp", spec.Target)
	if err != nil {
		return 0, fmt.Errorf("senders: target: %w", err)
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
		wg.Add(1)
		go func() { // sockets and pools in parallel
			defer wg.Done()
			errs[i] = s.prepare(target)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	emit(evReady, 0)
	var (
		sent    atomic.Uint64
		cpu     atomic.Int64
		stopped sync.Once
	)
	start := time.Now()
	deadline := start.Add(spec.Duration)
	emit(evStart, 0)
	for _, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if lockThreads {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				t0 := threadCPU()
				defer func() { cpu.Add(int64(threadCPU() - t0)) }()
			}
			var n uint64
			if spec.Rate > 0 {
				n = s.paced(ctx, start, deadline, func() { stopped.Do(func() { emit(evStopped, uint64(spec.StopHost)) }) })
			} else {
				n = s.blast(ctx, deadline)
			}
			sent.Add(n)
		}()
	}
	wg.Wait()
	emit(evDone, sent.Load())
	return time.Duration(cpu.Load()), ctx.Err()
}

// threadCPU returns the calling thread's CPU time.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

const sendBatch = 64

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
