package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/sim"
	"github.com/weftnet/weft/wire"
)

// Transports compared by StreamCompare.
const (
	TransportLean = "lean" // wire.Conn over TCP: 4-byte length + type + JSON
	TransportGRPC = "grpc" // one grpc.ClientConn per agent, one bidi stream
)

// StreamCompareConfig configures the config stream transport comparison.
type StreamCompareConfig struct {
	// Transports to measure, in order (default lean then grpc).
	Transports []string
	// N is the number of agent connections (default 9000: this process may
	// hold 20,000 open files and each connection costs two, both ends
	// living in this process).
	N int
	// K is the number of small deltas sent to each agent after the
	// snapshot (default 10). Each round goes to every agent; the next
	// round starts when every agent acked (window of one per agent).
	K int
	// DialConcurrency bounds the concurrent connection opens (default 64).
	DialConcurrency int
	// Timeout bounds each transport's run (default 5m).
	Timeout time.Duration
	// AgentsInChild runs the agents in a child process (this binary's
	// hidden sim.ChildCommand, which must run ChildRoles), so that the
	// memory, goroutine and CPU figures are the server's alone and N may go
	// up to ~19,000 (one fd per connection in each process).
	AgentsInChild bool
	// Progress receives one line per second (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

// StreamCompareReport is the result of StreamCompare.
type StreamCompareReport struct {
	N, K          int
	SnapshotBytes int // JSON body of the snapshot delta
	DeltaBytes    int // JSON body of a small delta
	Results       []StreamResult
}

// StreamResult is one transport's measurement. Both ends of every
// connection live in this process, so the memory, goroutine and CPU
// figures count the server and the client side together.
type StreamResult struct {
	Transport string
	N, K      int
	// AgentsInChild: the agents ran in a child process, so memory,
	// goroutines and CPU are the server side's alone.
	AgentsInChild bool
	// OpenTime is the time to open all N connections (for lean: TCP dial
	// + Hello/Welcome; for grpc: NewClient + NewStream + Hello/Welcome).
	OpenTime time.Duration
	// SnapshotTime is the time from the start of the snapshot round until
	// every agent acked the snapshot.
	SnapshotTime time.Duration
	// DeltaTime is the time of the K small delta rounds.
	DeltaTime time.Duration
	// Memory per connection, both ends, after a GC: HeapInuse and VmRSS
	// growth over the baseline divided by N, idle (all open, Welcome
	// exchanged) and after the deltas.
	HeapPerConnIdle, RSSPerConnIdle     float64
	HeapPerConnActive, RSSPerConnActive float64
	// Totals behind the per-connection figures, bytes.
	HeapIdle, RSSIdle, HeapActive, RSSActive int64
	// GoroutinesPerConn is (goroutines when all are open - baseline) / N,
	// both ends; ServerGoroutinesPerConn and ClientGoroutinesPerConn split
	// it by pprof label (goroutines inherit the label of their creator).
	GoroutinesPerConn                                float64
	ServerGoroutinesPerConn, ClientGoroutinesPerConn float64
	// CPU (user + system, this process, both ends) per delivered and acked
	// delta, snapshot included, and for the whole delivery phase.
	CPUPerDelta time.Duration
	CPUTotal    time.Duration
	// CPUOpen is the CPU spent opening the N connections.
	CPUOpen time.Duration
	// Round trip of the small deltas, send to ack as seen by the server.
	RTTP50, RTTP99, RTTMax time.Duration
	// SnapshotRTTP50/P99 is the snapshot's send-to-ack time.
	SnapshotRTTP50, SnapshotRTTP99 time.Duration
}

// String formats the report as a table.
func (r *StreamCompareReport) String() string {
	var b strings.Builder
	where := "agents in this process: memory, goroutines, CPU = server + clients"
	if len(r.Results) > 0 && r.Results[0].AgentsInChild {
		where = "agents in a child process: memory, goroutines, CPU = server side only"
	}
	fmt.Fprintf(&b, "stream compare: N=%d agents, K=%d small deltas each, snapshot %d B, delta %d B (JSON bodies); %s\n",
		r.N, r.K, r.SnapshotBytes, r.DeltaBytes, where)
	fmt.Fprintf(&b, "%-5s %9s %9s %9s %10s %10s %10s %10s %7s %9s %9s %9s %9s %9s %9s\n",
		"tr", "open", "snapAll", "deltas", "heap/c", "rss/c", "heap/c*", "rss/c*", "gor/c", "cpu/dlt", "cpuOpen", "rttP50", "rttP99", "snapP50", "snapP99")
	for _, s := range r.Results {
		fmt.Fprintf(&b, "%-5s %9s %9s %9s %10s %10s %10s %10s %7.2f %9s %9s %9s %9s %9s %9s\n",
			s.Transport, rd(s.OpenTime), rd(s.SnapshotTime), rd(s.DeltaTime),
			kib(s.HeapPerConnIdle), kib(s.RSSPerConnIdle), kib(s.HeapPerConnActive), kib(s.RSSPerConnActive),
			s.GoroutinesPerConn, s.CPUPerDelta.Round(100*time.Nanosecond), rd(s.CPUOpen),
			s.RTTP50.Round(10*time.Microsecond), s.RTTP99.Round(10*time.Microsecond),
			s.SnapshotRTTP50.Round(10*time.Microsecond), s.SnapshotRTTP99.Round(10*time.Microsecond))
	}
	b.WriteString("(heap/c, rss/c: idle after open; * after the deltas; per connection)\n")
	for _, s := range r.Results {
		fmt.Fprintf(&b, "%s goroutines per connection: server %.2f, client %.2f\n", s.Transport, s.ServerGoroutinesPerConn, s.ClientGoroutinesPerConn)
	}
	for _, s := range r.Results {
		fmt.Fprintf(&b, "%s totals: heap idle %.1f MiB, rss idle %.1f MiB, heap active %.1f MiB, rss active %.1f MiB, cpu delivery %s\n",
			s.Transport, mib(s.HeapIdle), mib(s.RSSIdle), mib(s.HeapActive), mib(s.RSSActive), rd(s.CPUTotal))
	}
	return b.String()
}

func rd(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
func kib(v float64) string             { return strconv.FormatFloat(v/1024, 'f', 1, 64) + "K" }
func mib(v int64) float64              { return float64(v) / (1 << 20) }

// StreamCompare measures the lean config stream (wire.Conn) against gRPC
// bidirectional streams carrying the same messages (wire.Delta, wire.Ack,
// JSON encoded by a per-server/per-connection codec) on 127.0.0.1.
func StreamCompare(ctx context.Context, cfg StreamCompareConfig) (*StreamCompareReport, error) {
	if len(cfg.Transports) == 0 {
		cfg.Transports = []string{TransportLean, TransportGRPC}
	}
	if cfg.N <= 0 {
		cfg.N = 9000
	}
	if cfg.K <= 0 {
		cfg.K = 10
	}
	if cfg.DialConcurrency <= 0 {
		cfg.DialConcurrency = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	snap, deltas := scView(cfg.K)
	sb, err := json.Marshal(snap)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	db, err := json.Marshal(deltas[0])
	if err != nil {
		return nil, fmt.Errorf("encode delta: %w", err)
	}
	rep := &StreamCompareReport{N: cfg.N, K: cfg.K, SnapshotBytes: len(sb), DeltaBytes: len(db)}
	for _, tr := range cfg.Transports {
		t, err := scTransportFor(tr, "")
		if err != nil {
			return rep, err
		}
		res, err := scRun(ctx, cfg, tr, t, snap, deltas)
		if err != nil {
			return rep, fmt.Errorf("stream compare %s: %w", tr, err)
		}
		rep.Results = append(rep.Results, *res)
	}
	return rep, nil
}

// scView builds a realistic host view: 10 endpoints and 2 VPCs as the
// snapshot, and k one-endpoint deltas after it.
func scView(k int) (*wire.Delta, []*wire.Delta) {
	ep := func(i, gen int) wire.Resource {
		data := fmt.Sprintf(`{"name":"ep-%[1]d","vpc":"vpc-%[3]d","subnet":"subnet-%[3]d-a","ip":"10.%[3]d.0.%[1]d","mac":"02:00:0a:00:00:%02[1]x","vni":%[4]d,"host":"host-000123","securityGroups":["sg-web","sg-default"],"generation":%[2]d}`,
			i, gen, i%2, 1000+i%2)
		return wire.Resource{Key: wire.ResourceKey{Type: "endpoint", ID: "ep-" + strconv.Itoa(i)}, Data: json.RawMessage(data)}
	}
	snap := &wire.Delta{FromVersion: 0, ToVersion: 1, Snapshot: true}
	for v := range 2 {
		data := fmt.Sprintf(`{"name":"vpc-%[1]d","vni":%[2]d,"cidrs":["10.%[1]d.0.0/16"],"subnets":[{"name":"subnet-%[1]d-a","cidr":"10.%[1]d.0.0/24","gateway":"10.%[1]d.0.1"}],"mtu":1450}`, v, 1000+v)
		snap.Upserts = append(snap.Upserts, wire.Resource{Key: wire.ResourceKey{Type: "vpc", ID: "vpc-" + strconv.Itoa(v)}, Data: json.RawMessage(data)})
	}
	for i := range 10 {
		snap.Upserts = append(snap.Upserts, ep(i, 1))
	}
	deltas := make([]*wire.Delta, k)
	for j := range k {
		deltas[j] = &wire.Delta{FromVersion: uint64(j + 1), ToVersion: uint64(j + 2), Upserts: []wire.Resource{ep(j%10, j+2)}}
	}
	return snap, deltas
}

// scTransportFor returns the transport called name, whose server is at
// addr ("": not started yet).
func scTransportFor(name, addr string) (scTransport, error) {
	switch name {
	case TransportLean:
		return &scLean{addrStr: addr}, nil
	case TransportGRPC:
		return &scGRPC{addrStr: addr}, nil
	}
	return nil, fmt.Errorf("stream compare: unknown transport %q", name)
}

// scTransport is one transport under test. The server calls serve for
// every accepted stream; the client side is one scClient per agent.
type scTransport interface {
	// start starts the server; it calls serve for every stream opened.
	start(serve func(ctx context.Context, s scServerStream) error) error
	// dial opens one agent stream and exchanges Hello/Welcome.
	dial(ctx context.Context, id int) (scClientStream, error)
	// stop stops the server and waits for its goroutines.
	stop()
	// addr is the server's address.
	addr() string
}

type scServerStream interface {
	sendDelta(ctx context.Context, d *wire.Delta) error
	recvAck(ctx context.Context) (uint64, error)
}

type scClientStream interface {
	recvDelta(ctx context.Context) (*wire.Delta, error)
	sendAck(ctx context.Context, v uint64) error
	close() error
}

// scState is the run's shared state: the sessions, the round
// schedule (one slot per delta round) and the round trips.
type scState struct {
	n, k    int
	snap    *wire.Delta
	deltas  []*wire.Delta
	opened  atomic.Int64
	rounds  []chan struct{} // closed by the coordinator to start round r
	acked   []atomic.Int64  // agents that acked round r
	done    []chan struct{} // closed when all agents acked round r
	nextIdx atomic.Int64
	rtt     []time.Duration // [session*(k+1)+round]
	failed  atomic.Int64
}

func (st *scState) serve(ctx context.Context, s scServerStream) error {
	idx := int(st.nextIdx.Add(1) - 1)
	if idx >= st.n {
		return fmt.Errorf("session %d beyond %d agents", idx, st.n)
	}
	st.opened.Add(1)
	for r := range st.rounds {
		select {
		case <-st.rounds[r]:
		case <-ctx.Done():
			return ctx.Err()
		}
		d := st.snap
		if r > 0 {
			d = st.deltas[r-1]
		}
		t0 := time.Now()
		if err := s.sendDelta(ctx, d); err != nil {
			st.failed.Add(1)
			return fmt.Errorf("session %d round %d: send: %w", idx, r, err)
		}
		v, err := s.recvAck(ctx)
		if err != nil {
			st.failed.Add(1)
			return fmt.Errorf("session %d round %d: ack: %w", idx, r, err)
		}
		if v != d.ToVersion {
			st.failed.Add(1)
			return fmt.Errorf("session %d round %d: ack %d, want %d", idx, r, v, d.ToVersion)
		}
		st.rtt[idx*(st.k+1)+r] = time.Since(t0)
		if st.acked[r].Add(1) == int64(st.n) {
			close(st.done[r])
		}
	}
	<-ctx.Done()
	return nil
}

// scAgent is one agent: it acks every delta it receives until the stream
// ends.
func scAgent(ctx context.Context, c scClientStream) {
	for {
		d, err := c.recvDelta(ctx)
		if err != nil {
			return
		}
		if err := c.sendAck(ctx, d.ToVersion); err != nil {
			return
		}
	}
}

func scRun(parent context.Context, cfg StreamCompareConfig, name string, t scTransport, snap *wire.Delta, deltas []*wire.Delta) (*StreamResult, error) {
	ctx, cancel := context.WithTimeout(parent, cfg.Timeout)
	defer cancel()
	log := cfg.Logger.With("transport", name)
	res := &StreamResult{Transport: name, N: cfg.N, K: cfg.K, AgentsInChild: cfg.AgentsInChild}
	st := &scState{n: cfg.N, k: cfg.K, snap: snap, deltas: deltas,
		rounds: make([]chan struct{}, cfg.K+1), acked: make([]atomic.Int64, cfg.K+1),
		done: make([]chan struct{}, cfg.K+1), rtt: make([]time.Duration, cfg.N*(cfg.K+1))}
	for r := range st.rounds {
		st.rounds[r] = make(chan struct{})
		st.done[r] = make(chan struct{})
	}

	heap0, rss0, err := scMem()
	if err != nil {
		return nil, err
	}
	gor0 := runtime.NumGoroutine()

	// Sessions run until runCtx ends; cancel it before stopping.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var startErr error
	pprof.Do(ctx, pprof.Labels(scLabel, "server"), func(context.Context) {
		startErr = t.start(func(sctx context.Context, s scServerStream) error {
			return st.serve(scMerge(sctx, runCtx), s)
		})
	})
	if startErr != nil {
		return nil, fmt.Errorf("start server: %w", startErr)
	}
	var agents sync.WaitGroup
	clients := make([]scClientStream, cfg.N)
	defer func() {
		stopRun()
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
		agents.Wait()
		t.stop()
	}()

	// Progress reporter.
	var phase atomic.Value
	phase.Store("open")
	var dialed atomic.Int64
	progDone := make(chan struct{})
	var prog sync.WaitGroup
	prog.Go(func() {
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		start := time.Now()
		for {
			select {
			case <-progDone:
				return
			case <-tk.C:
			}
			if cfg.Progress == nil {
				continue
			}
			var acks []string
			for r := range st.acked {
				if a := st.acked[r].Load(); a > 0 && a < int64(cfg.N) {
					acks = append(acks, fmt.Sprintf("r%d=%d", r, a))
				}
			}
			fmt.Fprintf(cfg.Progress, "%s %5.1fs %-8s dialed=%d opened=%d acks[%s] failed=%d goroutines=%d\n",
				name, time.Since(start).Seconds(), phase.Load(), dialed.Load(), st.opened.Load(), strings.Join(acks, " "), st.failed.Load(), runtime.NumGoroutine())
		}
	})
	defer func() { close(progDone); prog.Wait() }()

	// Open.
	cpu0 := processCPU()
	t0 := time.Now()
	var child *sim.Child
	var childDone <-chan struct{} // never closed without a child
	if cfg.AgentsInChild {
		ch, err := startChild(ctx, "stream compare agents", roleStreamAgents,
			scAgentSpec{Transport: name, Addr: t.addr(), N: cfg.N, DialConcurrency: cfg.DialConcurrency}, false)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := ch.Close(); err != nil {
				log.Warn("agent child", "err", err)
			}
		}()
		child, childDone = ch, ch.Done()
	} else {
		var openErr error
		pprof.Do(ctx, pprof.Labels(scLabel, "client"), func(context.Context) {
			openErr = scDialAll(ctx, t, clients, cfg.DialConcurrency, &dialed)
		})
		if openErr != nil {
			return nil, openErr
		}
	}
	// The server registers a session once it read the Hello and sent the
	// Welcome (a moment after the agent got it).
	for st.opened.Load() < int64(cfg.N) {
		select {
		case <-childDone:
			return nil, fmt.Errorf("agent child exited early with %d of %d open: %v", st.opened.Load(), cfg.N, child.Err())
		case <-ctx.Done():
			return nil, fmt.Errorf("open: %d of %d: %w", st.opened.Load(), cfg.N, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	res.OpenTime = time.Since(t0)
	res.CPUOpen = processCPU() - cpu0
	if cfg.AgentsInChild {
		dialed.Store(st.opened.Load())
	}
	if !cfg.AgentsInChild {
		pprof.Do(ctx, pprof.Labels(scLabel, "client"), func(context.Context) {
			for _, c := range clients {
				agents.Go(func() { scAgent(runCtx, c) })
			}
		})
	}
	// Let the agent goroutines block in their reads before measuring.
	time.Sleep(200 * time.Millisecond)
	res.GoroutinesPerConn = float64(runtime.NumGoroutine()-gor0) / float64(cfg.N)
	srvG, cliG, err := scGoroutinesBySide()
	if err != nil {
		return nil, err
	}
	res.ServerGoroutinesPerConn = float64(srvG) / float64(cfg.N)
	res.ClientGoroutinesPerConn = float64(cliG) / float64(cfg.N)
	heap1, rss1, err := scMem()
	if err != nil {
		return nil, err
	}
	res.HeapIdle, res.RSSIdle = heap1-heap0, rss1-rss0
	res.HeapPerConnIdle = float64(res.HeapIdle) / float64(cfg.N)
	res.RSSPerConnIdle = float64(res.RSSIdle) / float64(cfg.N)
	log.Info("opened", "n", cfg.N, "took", res.OpenTime)

	// Deliver: the snapshot, then K rounds of one small delta.
	cpu1 := processCPU()
	tDeliver := time.Now()
	for r := range st.rounds {
		if r == 0 {
			phase.Store("snapshot")
		} else {
			phase.Store("deltas")
		}
		t1 := time.Now()
		close(st.rounds[r])
		select {
		case <-st.done[r]:
		case <-ctx.Done():
			return nil, fmt.Errorf("round %d: %d of %d acked, %d failed: %w", r, st.acked[r].Load(), cfg.N, st.failed.Load(), ctx.Err())
		}
		if r == 0 {
			res.SnapshotTime = time.Since(t1)
		}
	}
	res.DeltaTime = time.Since(tDeliver) - res.SnapshotTime
	res.CPUTotal = processCPU() - cpu1
	res.CPUPerDelta = res.CPUTotal / time.Duration(cfg.N*(cfg.K+1))
	phase.Store("measure")
	heap2, rss2, err := scMem()
	if err != nil {
		return nil, err
	}
	res.HeapActive, res.RSSActive = heap2-heap0, rss2-rss0
	res.HeapPerConnActive = float64(res.HeapActive) / float64(cfg.N)
	res.RSSPerConnActive = float64(res.RSSActive) / float64(cfg.N)

	var snapRTT, rtt []time.Duration
	for i := range cfg.N {
		row := st.rtt[i*(cfg.K+1) : (i+1)*(cfg.K+1)]
		snapRTT = append(snapRTT, row[0])
		rtt = append(rtt, row[1:]...)
	}
	res.SnapshotRTTP50, res.SnapshotRTTP99 = percentile(snapRTT, 50), percentile(snapRTT, 99)
	res.RTTP50, res.RTTP99, res.RTTMax = percentile(rtt, 50), percentile(rtt, 99), percentile(rtt, 100)
	phase.Store("close")
	log.Info("done", "snapshot", res.SnapshotTime, "deltas", res.DeltaTime)
	return res, nil
}

// scDialAll opens len(clients) agent streams, conc at a time.
func scDialAll(ctx context.Context, t scTransport, clients []scClientStream, conc int, dialed *atomic.Int64) error {
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for i := range clients {
		sem <- struct{}{}
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop {
			<-sem
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := t.dial(ctx, i)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("dial agent %d: %w", i, err)
				}
				mu.Unlock()
				return
			}
			clients[i] = c
			dialed.Add(1)
		})
	}
	wg.Wait()
	return firstErr
}

// scAgentSpec tells an agent child what to open.
type scAgentSpec struct {
	Transport       string `json:"transport"`
	Addr            string `json:"addr"`
	N               int    `json:"n"`
	DialConcurrency int    `json:"dialConcurrency"`
}

// runStreamAgents is the role streamcmp-agents, the agents of StreamCompare
// with AgentsInChild: it writes "ready", opens the agents scAgentSpec
// describes and acks every delta until its stdin closes.
func runStreamAgents(ctx context.Context, c sim.ChildIO) error {
	var sp scAgentSpec
	if err := json.Unmarshal(c.Spec, &sp); err != nil {
		return fmt.Errorf("stream compare agents: decode spec: %w", err)
	}
	t, err := scTransportFor(sp.Transport, sp.Addr)
	if err != nil {
		return err
	}
	c.Emit(&childMsg{T: "ready"})
	clients := make([]scClientStream, sp.N)
	var dialed atomic.Int64
	var agents sync.WaitGroup
	defer func() {
		for _, cs := range clients {
			if cs != nil {
				cs.close()
			}
		}
		agents.Wait()
	}()
	if err := scDialAll(ctx, t, clients, max(sp.DialConcurrency, 1), &dialed); err != nil {
		return fmt.Errorf("stream compare agents: %w", err)
	}
	for _, cs := range clients {
		agents.Go(func() { scAgent(ctx, cs) })
	}
	<-ctx.Done()
	return nil
}

// scLabel is the pprof label key that tells the server's goroutines from
// the clients'.
const scLabel = "weft_streamcmp"

// scGoroutinesBySide counts the goroutines labelled server and client.
func scGoroutinesBySide() (server, client int, err error) {
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		return 0, 0, fmt.Errorf("goroutine profile: %w", err)
	}
	n := 0
	for line := range strings.Lines(b.String()) {
		line = strings.TrimSpace(line)
		if c, _, ok := strings.Cut(line, " @ "); ok {
			n, _ = strconv.Atoi(c)
			continue
		}
		if strings.HasPrefix(line, "# labels:") {
			switch {
			case strings.Contains(line, `"`+scLabel+`":"server"`):
				server += n
			case strings.Contains(line, `"`+scLabel+`":"client"`):
				client += n
			}
		}
	}
	return server, client, nil
}

// scMerge returns a context done when either a or b is.
func scMerge(a, b context.Context) context.Context {
	ctx, cancel := context.WithCancel(a)
	context.AfterFunc(b, cancel)
	return ctx
}

// scMem returns HeapInuse and VmRSS after a GC.
func scMem() (heap, rss int64, err error) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, fmt.Errorf("read rss: %w", err)
	}
	for line := range bytes.Lines(b) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("parse VmRSS %q: %w", line, err)
			}
			return int64(ms.HeapInuse), kb << 10, nil
		}
	}
	return 0, 0, errors.New("read rss: no VmRSS in /proc/self/status")
}

// ---- lean: wire.Conn over TCP ----

type scLean struct {
	addrStr string
	ln      net.Listener
	life    lifecycle.Group
	mu      sync.Mutex
	conns   map[*wire.Conn]struct{}
}

// scListen listens on a free port of 127.0.0.1.
func scListen() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return ln, nil
}

func (l *scLean) start(serve func(ctx context.Context, s scServerStream) error) (err error) {
	if _, err := l.life.Start(); err != nil {
		return err
	}
	if l.ln, err = scListen(); err != nil {
		return err
	}
	l.addrStr = l.ln.Addr().String()
	l.conns = make(map[*wire.Conn]struct{})
	l.life.Go(func(context.Context) {
		for {
			nc, err := l.ln.Accept()
			if err != nil {
				return
			}
			c := wire.NewConn(nc, 0)
			l.mu.Lock()
			l.conns[c] = struct{}{}
			l.mu.Unlock()
			if !l.life.Go(func(ctx context.Context) { l.session(ctx, c, serve) }) {
				c.Close() // stopping
				return
			}
		}
	})
	return nil
}

// session answers one agent's Hello and serves its stream.
func (l *scLean) session(ctx context.Context, c *wire.Conn, serve func(ctx context.Context, s scServerStream) error) {
	defer func() {
		c.Close()
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}()
	m, err := c.ReadMessage(ctx)
	if err != nil {
		return
	}
	h, ok := m.(*wire.Hello)
	if !ok {
		return
	}
	if err := c.WriteMessage(ctx, &wire.Welcome{HostID: h.HostID, Snapshot: true}); err != nil {
		return
	}
	serve(ctx, scLeanStream{c}) //nolint:errcheck // failures are counted by the session
}

func (l *scLean) dial(ctx context.Context, id int) (scClientStream, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", l.addrStr)
	if err != nil {
		return nil, err
	}
	c := wire.NewConn(nc, 0)
	if err := c.WriteMessage(ctx, &wire.Hello{Host: "host-" + strconv.Itoa(id), HostID: uint32(id + 1)}); err != nil {
		c.Close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	m, err := c.ReadMessage(ctx)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("welcome: %w", err)
	}
	if _, ok := m.(*wire.Welcome); !ok {
		c.Close()
		return nil, fmt.Errorf("welcome: got %T", m)
	}
	return scLeanStream{c}, nil
}

func (l *scLean) addr() string { return l.addrStr }

func (l *scLean) stop() {
	_ = l.life.Close(func() error {
		l.mu.Lock()
		for c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
		if l.ln == nil {
			return nil
		}
		return l.ln.Close()
	})
}

type scLeanStream struct{ c *wire.Conn }

func (s scLeanStream) sendDelta(ctx context.Context, d *wire.Delta) error {
	return s.c.WriteMessage(ctx, d)
}

func (s scLeanStream) recvAck(ctx context.Context) (uint64, error) {
	m, err := s.c.ReadMessage(ctx)
	if err != nil {
		return 0, err
	}
	a, ok := m.(*wire.Ack)
	if !ok {
		return 0, fmt.Errorf("got %T, want ack", m)
	}
	return a.Version, nil
}

func (s scLeanStream) recvDelta(ctx context.Context) (*wire.Delta, error) {
	m, err := s.c.ReadMessage(ctx)
	if err != nil {
		return nil, err
	}
	d, ok := m.(*wire.Delta)
	if !ok {
		return nil, fmt.Errorf("got %T, want delta", m)
	}
	return d, nil
}

func (s scLeanStream) sendAck(ctx context.Context, v uint64) error {
	return s.c.WriteMessage(ctx, &wire.Ack{Version: v})
}

func (s scLeanStream) close() error { return s.c.Close() }

// ---- grpc: one ClientConn per agent, one bidi stream ----

// scJSONCodec is a grpc codec that encodes the wire structs as JSON. It is
// passed per server and per connection (ForceServerCodec, ForceCodec), not
// registered globally.
type scJSONCodec struct{}

func (scJSONCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (scJSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (scJSONCodec) Name() string                       { return "json" }

// scStreamService is the handler type of scServiceDesc.
type scStreamService interface{ isStreamService() }

type scGRPCService struct {
	serve func(ctx context.Context, s scServerStream) error
}

func (*scGRPCService) isStreamService() {}

const scMethod = "/weft.bench.v1.Config/Stream"

var scServiceDesc = grpc.ServiceDesc{
	ServiceName: "weft.bench.v1.Config",
	HandlerType: (*scStreamService)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(srv any, ss grpc.ServerStream) error {
			var h wire.Hello
			if err := ss.RecvMsg(&h); err != nil {
				return err
			}
			if err := ss.SendMsg(&wire.Welcome{HostID: h.HostID, Snapshot: true}); err != nil {
				return err
			}
			return srv.(*scGRPCService).serve(ss.Context(), scGRPCServerStream{ss})
		},
	}},
}

type scGRPC struct {
	addrStr string
	srv     *grpc.Server
	life    lifecycle.Group
}

func (g *scGRPC) start(serve func(ctx context.Context, s scServerStream) error) error {
	if _, err := g.life.Start(); err != nil {
		return err
	}
	ln, err := scListen()
	if err != nil {
		return err
	}
	g.addrStr = ln.Addr().String()
	g.srv = grpc.NewServer(grpc.ForceServerCodec(scJSONCodec{}), grpc.WaitForHandlers(true))
	g.srv.RegisterService(&scServiceDesc, &scGRPCService{serve: serve})
	g.life.Go(func(context.Context) { g.srv.Serve(ln) }) //nolint:errcheck // ends with Stop
	return nil
}

func (g *scGRPC) dial(ctx context.Context, id int) (scClientStream, error) {
	cc, err := grpc.NewClient("passthrough:///"+g.addrStr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(scJSONCodec{})))
	if err != nil {
		return nil, fmt.Errorf("new client: %w", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	cs, err := cc.NewStream(sctx, &scServiceDesc.Streams[0], scMethod)
	if err != nil {
		cancel()
		cc.Close()
		return nil, fmt.Errorf("new stream: %w", err)
	}
	c := &scGRPCClientStream{cc: cc, cs: cs, cancel: cancel}
	if err := cs.SendMsg(&wire.Hello{Host: "host-" + strconv.Itoa(id), HostID: uint32(id + 1)}); err != nil {
		c.close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	var w wire.Welcome
	if err := cs.RecvMsg(&w); err != nil {
		c.close()
		return nil, fmt.Errorf("welcome: %w", err)
	}
	return c, nil
}

func (g *scGRPC) addr() string { return g.addrStr }

func (g *scGRPC) stop() {
	_ = g.life.Close(func() error {
		if g.srv != nil {
			g.srv.Stop()
		}
		return nil
	})
}

type scGRPCServerStream struct{ ss grpc.ServerStream }

func (s scGRPCServerStream) sendDelta(_ context.Context, d *wire.Delta) error { return s.ss.SendMsg(d) }

func (s scGRPCServerStream) recvAck(_ context.Context) (uint64, error) {
	var a wire.Ack
	if err := s.ss.RecvMsg(&a); err != nil {
		return 0, err
	}
	return a.Version, nil
}

type scGRPCClientStream struct {
	cc     *grpc.ClientConn
	cs     grpc.ClientStream
	cancel context.CancelFunc
}

func (c *scGRPCClientStream) recvDelta(_ context.Context) (*wire.Delta, error) {
	var d wire.Delta
	if err := c.cs.RecvMsg(&d); err != nil {
		return nil, err
	}
	return &d, nil
}

func (c *scGRPCClientStream) sendAck(_ context.Context, v uint64) error {
	return c.cs.SendMsg(&wire.Ack{Version: v})
}

func (c *scGRPCClientStream) close() error {
	c.cancel()
	return c.cc.Close()
}
