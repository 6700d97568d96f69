package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/backoff"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller"
	"github.com/weftnet/weft/controller/hostkey"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/sim"
)

// PolicyChangePart is a change phase: policies created one at a time
// through the API, each selecting every endpoint of one VPC, and the time
// from before the write until every host with an endpoint of that VPC
// enforces it.
type PolicyChangePart struct {
	Hosts     int `json:"hosts"`
	Endpoints int `json:"endpoints"`
	VPCs      int `json:"vpcs"`
	Changes   int `json:"changes"`
	// Incomplete changes had a host that did not enforce them within the
	// wait timeout; they are left out of the percentiles.
	Incomplete int `json:"incomplete"`
	// AffectedHosts is the mean number of hosts a change reached.
	AffectedHosts float64 `json:"affectedHosts"`
	// Write → enforced on every affected host: with the linux driver, the
	// first datagram the new policy allows arrived (a sender on another
	// host sends one every millisecond to an endpoint on each affected
	// host); with the sim driver, the host's Set held the policy's rules.
	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
	MaxMs float64 `json:"maxMs"`
	// Write → enforced, per affected host.
	HostP50Ms float64 `json:"hostP50Ms"`
	HostP99Ms float64 `json:"hostP99Ms"`
	// SetP50Ms, SetP99Ms (linux driver): write → the Set that holds the
	// rules returned on every affected host (it also re-reads the VPCs'
	// state after committing the rules).
	SetP50Ms float64 `json:"setP50Ms,omitempty"`
	SetP99Ms float64 `json:"setP99Ms,omitempty"`
	// The API create's own latency (durable in etcd).
	APIP50Ms float64 `json:"apiP50Ms"`
	APIP99Ms float64 `json:"apiP99Ms"`
	// SetupSeconds: until every host was programmed.
	SetupSeconds float64 `json:"setupSeconds"`
	// EndpointResync is the linux driver's (kernel phase).
	EndpointResync string `json:"endpointResync,omitempty"`
}

// watchPrefix names the policies the change phases create and watch.
const watchPrefix = "bp-"

// changeTarget is where change i goes: a VPC and the hosts with its
// endpoints.
type changeTarget struct {
	tenant, vpc string
	hosts       []int
}

// changeWait waits up to timeout for a change to be enforced on its
// hosts and returns when it was on each (set: when each host's Set that
// held it returned, if measured).
type changeWait func(ctx context.Context, timeout time.Duration) (enforced, set map[int]time.Time, err error)

// measureChanges creates cfg.Changes policies through cl, the i-th on the
// target pick(i) returns, each allowing UDP port 1000+i from the VPC; arm
// prepares the wait for change i before it is written, and done undoes
// what arm made.
func measureChanges(ctx context.Context, cfg *PolicyConfig, cl *client.Client, st *statusLine, part *PolicyChangePart,
	pick func(i int) changeTarget, arm func(ctx context.Context, i int, tg changeTarget) (wait changeWait, done func(), err error)) error {
	var all, perHost, sets, api []time.Duration
	affected := 0
	for i := range cfg.Changes {
		tg := pick(i)
		name := fmt.Sprintf("%s%d", watchPrefix, i)
		p := &apiv1.SecurityPolicy{TypeMeta: tm(apiv1.KindSecurityPolicy), Metadata: apiv1.ObjectMeta{Name: name, Tenant: tg.tenant},
			Spec: apiv1.SecurityPolicySpec{VPC: tg.vpc, Ingress: []apiv1.PolicyRule{{
				Peers: []apiv1.PolicyPeer{{Selector: &apiv1.LabelSelector{}}},
				Ports: []apiv1.PolicyPort{{Protocol: "UDP", Port: 1000 + i}}}}}}
		wait, done, err := arm(ctx, i, tg)
		if err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		affected += len(tg.hosts)
		t0 := time.Now()
		if _, err := cl.Create(ctx, p); err != nil {
			done()
			return fmt.Errorf("create policy %s/%s: %w", tg.tenant, name, err)
		}
		api = append(api, time.Since(t0))
		enforced, set, err := wait(ctx, cfg.WaitTimeout)
		done()
		if err != nil {
			return err
		}
		latest := func(m map[int]time.Time) time.Duration {
			var last time.Time
			for _, at := range m {
				if at.After(last) {
					last = at
				}
			}
			return last.Sub(t0)
		}
		for _, at := range enforced {
			perHost = append(perHost, at.Sub(t0))
		}
		if len(enforced) < len(tg.hosts) || set != nil && len(set) < len(tg.hosts) {
			part.Incomplete++
			continue
		}
		all = append(all, latest(enforced))
		if set != nil {
			sets = append(sets, latest(set))
		}
		st.set("change %d/%d: %d hosts, enforced on all in %s", i+1, cfg.Changes, len(tg.hosts), latest(enforced).Round(time.Microsecond))
	}
	part.Changes = cfg.Changes
	part.AffectedHosts = round3(float64(affected) / float64(cfg.Changes))
	part.P50Ms, part.P99Ms, part.MaxMs = percentileMs(all, 50), percentileMs(all, 99), percentileMs(all, 100)
	part.HostP50Ms, part.HostP99Ms = percentileMs(perHost, 50), percentileMs(perHost, 99)
	part.SetP50Ms, part.SetP99Ms = percentileMs(sets, 50), percentileMs(sets, 99)
	part.APIP50Ms, part.APIP99Ms = percentileMs(api, 50), percentileMs(api, 99)
	return nil
}

// policySim is the sim phase: the simulation of cfg.SimConfig (as `weft
// bench program` runs it), and policies in random VPCs.
func policySim(ctx context.Context, cfg *PolicyConfig, st *statusLine) (part *PolicyChangePart, err error) {
	start := time.Now()
	r, err := startSim(ctx, "policy", cfg.SimConfig, func(c *sim.Config) { c.WatchPolicy = watchPrefix }, cfg.Settle)
	defer func() { err = errors.Join(err, r.Close()) }()
	if err != nil {
		return nil, err
	}
	l := r.c.Layout()
	part = &PolicyChangePart{Hosts: l.Hosts, Endpoints: l.Endpoints, VPCs: l.VPCs, SetupSeconds: round3(time.Since(start).Seconds())}
	hostsOf := make([][]int, l.VPCs) // VPC → hosts with endpoints of it
	seen := map[[2]int]bool{}
	for e := range l.Endpoints {
		k, h := l.EndpointVPC(e), l.EndpointHost(e)
		if !seen[[2]int{k, h}] {
			seen[[2]int{k, h}] = true
			hostsOf[k] = append(hostsOf[k], h)
		}
	}
	rng := rand.New(rand.NewPCG(1, 0))
	pick := func(int) changeTarget {
		k := rng.IntN(l.VPCs)
		for len(hostsOf[k]) == 0 {
			k = rng.IntN(l.VPCs)
		}
		tenant, vpc, _ := l.VPC(k)
		return changeTarget{tenant, vpc, hostsOf[k]}
	}
	arm := func(_ context.Context, i int, tg changeTarget) (changeWait, func(), error) {
		id := fmt.Sprintf("%s/%s%d", tg.tenant, watchPrefix, i)
		return func(ctx context.Context, timeout time.Duration) (map[int]time.Time, map[int]time.Time, error) {
			waiting := make(map[int]bool, len(tg.hosts))
			for _, h := range tg.hosts {
				waiting[h] = true
			}
			got, err := r.waitAll(ctx, timeout, waiting, func(ev sim.Event) bool { return ev.Kind == "policy" && ev.ID == id })
			return got, nil, err
		}, func() {}, nil
	}
	st.set("sim: %d policy changes on %d hosts", cfg.Changes, l.Hosts)
	err = measureChanges(ctx, cfg, r.cl, st, part, pick, arm)
	st.printf("sim: %d hosts: %d changes reaching %.1f hosts each: enforced on all p50 %.3f ms, p99 %.3f ms, max %.3f ms; per host p99 %.3f ms; %d incomplete (goal p99 ≤ %.0f ms)",
		l.Hosts, part.Changes, part.AffectedHosts, part.P50Ms, part.P99Ms, part.MaxMs, part.HostP99Ms, part.Incomplete, GoalPolicyChangeP99Ms)
	return part, err
}

// policyWatch is a driver that reports, as sim events of kind "policy",
// the watched policies whose rules a successful Set held for the first
// time, and counts the endpoints of the last successful Set.
type policyWatch struct {
	datapath.Driver
	host   int
	events chan<- sim.Event
	nEP    atomic.Int64

	mu   sync.Mutex
	seen map[string]bool
}

func (w *policyWatch) Set(ctx context.Context, d *datapath.Desired) error {
	if err := w.Driver.Set(ctx, d); err != nil {
		return err
	}
	now := time.Now()
	w.nEP.Store(int64(len(d.Endpoints)))
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range sim.PolicyIDs(d, watchPrefix) {
		if !w.seen[id] {
			w.seen[id] = true
			select {
			case w.events <- sim.Event{Kind: "policy", Host: w.host, ID: id, At: now}:
			default:
			}
		}
	}
	return nil
}

// policyKernel is the kernel phase: a controller (embedded etcd) and one
// agent per host of a test net, all in this process, the agents on the
// linux driver; endpoints in VPCs of 100, spread over the hosts, each
// under a policy of its VPC; then policies in VPCs in turn.
func (r *dpRun) policyKernel(ctx context.Context, cfg *PolicyConfig) (*PolicyChangePart, error) {
	start := time.Now()
	vpcs := (cfg.KernelEndpoints + 99) / 100
	part := &PolicyChangePart{Hosts: cfg.KernelHosts, Endpoints: cfg.KernelEndpoints, VPCs: vpcs, EndpointResync: cfg.KernelResync.String()}
	n, err := r.newNet(testnet.Options{Hosts: cfg.KernelHosts})
	if err != nil {
		return nil, err
	}
	defer r.closeNet(n)
	dir, err := os.MkdirTemp("", "weft-bench-policy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// A lab in this process: the API over plain HTTP without credentials.
	c, err := controller.New(controller.Config{DataDir: dir, APIListen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", Logger: r.cfg.Logger,
		InsecureHTTP: true})
	if err != nil {
		return nil, err
	}
	r.status.set("kernel: starting a controller")
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	defer c.Close()
	cl, err := client.New("http://"+c.APIAddr(), client.WithTimeout(30*time.Second))
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	objs := []apiv1.Object{&apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: "bench"}}}
	for _, h := range n.Hosts() {
		objs = append(objs, &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: h.Name}, Spec: apiv1.HostSpec{UnderlayIP: h.UnderlayIP.String()}})
	}
	for k := range vpcs {
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k), 0, 0}), 16).String()
		objs = append(objs,
			&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("v%d", k), Tenant: "bench"}, Spec: apiv1.VPCSpec{CIDRs: []string{cidr}}},
			&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("s%d", k), Tenant: "bench"}, Spec: apiv1.SubnetSpec{VPC: fmt.Sprintf("v%d", k), CIDR: cidr}},
			// Every endpoint is under a policy: TCP 80 from its VPC.
			&apiv1.SecurityPolicy{TypeMeta: tm(apiv1.KindSecurityPolicy), Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("base-%d", k), Tenant: "bench"},
				Spec: apiv1.SecurityPolicySpec{VPC: fmt.Sprintf("v%d", k), Ingress: []apiv1.PolicyRule{{
					Peers: []apiv1.PolicyPeer{{Selector: &apiv1.LabelSelector{}}}, Ports: []apiv1.PolicyPort{{Protocol: "TCP", Port: 80}}}}}})
	}
	for _, o := range objs {
		if _, err := cl.Create(ctx, o); err != nil {
			return nil, fmt.Errorf("create %s: %w", apiv1.RefOf(o), err)
		}
	}
	hosts := n.Hosts()
	expected := make([]int64, len(hosts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range cfg.KernelEndpoints {
		expected[i%len(hosts)]++
		g.Go(func() error {
			ep := &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint),
				Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("e%d", i), Tenant: "bench", Labels: map[string]string{"app": fmt.Sprint(i % 5)}},
				Spec:     apiv1.EndpointSpec{Subnet: fmt.Sprintf("s%d", i/100), Host: hosts[i%len(hosts)].Name}}
			_, err := cl.Create(gctx, ep)
			return err
		})
	}
	r.status.set("kernel: creating %d endpoints", cfg.KernelEndpoints)
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("create endpoints: %w", err)
	}

	events := make(chan sim.Event, 1<<12)
	var watches []*policyWatch
	var agents []*agent.Agent
	defer func() {
		for _, a := range agents {
			a.Close()
		}
		for _, w := range watches {
			w.Driver.Close()
		}
	}()
	for i, h := range hosts {
		d, err := r.newDriver(ctx, n, h, linux.Config{EndpointResync: cfg.KernelResync})
		if err != nil {
			return nil, err
		}
		w := &policyWatch{Driver: d, host: i, events: events, seen: map[string]bool{}}
		watches = append(watches, w)
		key, err := enrol(ctx, cl, h.Name)
		if err != nil {
			return nil, err
		}
		a, err := agent.New(agent.Config{Host: h.Name, StreamAddrs: []string{c.AgentAddr()}, UDPAddr: c.AgentAddr(),
			Key: key, Driver: w, UnderlayIP: h.UnderlayIP, UnderlayDev: h.UnderlayDev,
			Backoff: backoff.Policy{Min: 10 * time.Millisecond, Max: time.Second}, Logger: r.cfg.Logger})
		if err != nil {
			return nil, err
		}
		if err := a.Start(ctx); err != nil {
			return nil, err
		}
		agents = append(agents, a)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		done := 0
		var got int64
		for i, w := range watches {
			got += w.nEP.Load()
			if w.nEP.Load() == expected[i] {
				done++
			}
		}
		if done == len(watches) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d endpoints programmed after 10 minutes", got, cfg.KernelEndpoints)
		}
		r.status.set("kernel: %d/%d endpoints programmed", got, cfg.KernelEndpoints)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	part.SetupSeconds = round3(time.Since(start).Seconds())
	r.status.printf("kernel: %d endpoints in %d VPCs on %d hosts programmed in %.1f s", cfg.KernelEndpoints, vpcs, len(hosts), part.SetupSeconds)
	eps, _, err := cl.List(ctx, apiv1.KindEndpoint, "bench", "")
	if err != nil {
		return nil, err
	}
	ips := make(map[string]netip.Addr, len(eps)) // by endpoint name
	for _, o := range eps {
		ep := o.(*apiv1.Endpoint)
		if ips[ep.Metadata.Name], err = netip.ParseAddr(ep.Status.IP); err != nil {
			return nil, fmt.Errorf("endpoint %s: %w", ep.Metadata.Name, err)
		}
	}
	pick := func(i int) changeTarget {
		k := i % vpcs
		var on []int // the hosts with endpoints of VPC k: endpoint e is on host e % hosts
		for e := 100 * k; e < min(cfg.KernelEndpoints, 100*(k+1)) && len(on) < len(hosts); e++ {
			on = append(on, e%len(hosts))
		}
		return changeTarget{"bench", fmt.Sprintf("v%d", k), on}
	}
	// Each affected host gets a receiver (the VPC's first endpoint on it)
	// and a sender (one on another host if there is one), which sends a
	// datagram every millisecond to the port the change opens.
	arm := func(ctx context.Context, i int, tg changeTarget) (changeWait, func(), error) {
		k, port := i%vpcs, uint16(1000+i)
		last := min(cfg.KernelEndpoints, 100*(k+1))
		on := func(h int, other bool) int { // an endpoint of VPC k on host h, or not on h
			for e := 100 * k; e < last; e++ {
				if (e%len(hosts) == h) != other {
					return e
				}
			}
			return 100 * k
		}
		ns := func(e int) string {
			st, _ := watches[e%len(hosts)].Status(fmt.Sprintf("bench/e%d", e))
			return st.Netns
		}
		passed := make(chan sim.Event, len(tg.hosts))
		pc, cancel := context.WithCancel(ctx)
		var probes []func()
		done := func() {
			cancel()
			for _, stop := range probes {
				stop()
			}
		}
		for _, h := range tg.hosts {
			dst, src := on(h, false), on(h, len(hosts) > 1)
			if src == dst {
				src = dst + len(hosts) // another endpoint of the VPC on the same host
			}
			to := netip.AddrPortFrom(ips[fmt.Sprintf("e%d", dst)], port)
			stopRecv, err := firstDatagram(ns(dst), port, func(at time.Time) { passed <- sim.Event{Kind: "passed", Host: h, At: at} })
			if err != nil {
				done()
				return nil, nil, err
			}
			probes = append(probes, stopRecv)
			stopSend, err := sendEvery(pc, ns(src), to, time.Millisecond)
			if err != nil {
				done()
				return nil, nil, err
			}
			probes = append(probes, stopSend)
		}
		id := fmt.Sprintf("bench/%s%d", watchPrefix, i)
		return func(ctx context.Context, timeout time.Duration) (map[int]time.Time, map[int]time.Time, error) {
			enforced, set := map[int]time.Time{}, map[int]time.Time{}
			t := time.NewTimer(timeout)
			defer t.Stop()
			for len(enforced) < len(tg.hosts) || len(set) < len(tg.hosts) {
				select {
				case <-ctx.Done():
					return enforced, set, ctx.Err()
				case <-t.C:
					return enforced, set, nil
				case ev := <-passed:
					enforced[ev.Host] = ev.At
				case ev := <-events:
					if ev.ID == id {
						set[ev.Host] = ev.At
					}
				}
			}
			return enforced, set, nil
		}, done, nil
	}
	err = measureChanges(ctx, cfg, cl, r.status, part, pick, arm)
	r.status.printf("kernel: %d endpoints on %d hosts: %d changes: enforced on all p50 %.3f ms, p99 %.3f ms, max %.3f ms; per host p99 %.3f ms; Set returned p99 %.3f ms; %d incomplete (goal p99 ≤ %.0f ms)",
		cfg.KernelEndpoints, len(hosts), part.Changes, part.P50Ms, part.P99Ms, part.MaxMs, part.HostP99Ms, part.SetP99Ms, part.Incomplete, GoalPolicyChangeP99Ms)
	return part, err
}

// firstDatagram listens on UDP port in the namespace ns and calls got
// with the arrival time of the first datagram; stop closes it and waits.
func firstDatagram(ns string, port uint16, got func(time.Time)) (stop func(), err error) {
	var pc net.PacketConn
	if err := netnsfile.Do(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen on UDP %d in %s: %w", port, ns, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		if _, _, err := pc.ReadFrom(buf); err == nil {
			got(time.Now())
		}
	}()
	return func() { pc.Close(); <-done }, nil
}

// sendEvery sends a datagram to dst from the namespace ns every interval
// until ctx ends or stop is called.
func sendEvery(ctx context.Context, ns string, dst netip.AddrPort, interval time.Duration) (stop func(), err error) {
	var c net.Conn
	if err := netnsfile.Do(ns, func() error {
		var err error
		c, err = net.Dial("udp4", dst.String())
		return err
	}); err != nil {
		return nil, fmt.Errorf("UDP to %s from %s: %w", dst, ns, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			_, _ = c.Write([]byte("x"))
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	return func() { cancel(); <-done; c.Close() }, nil
}

// enrol enrols an existing host as the (insecure API's) cluster admin and
// returns its key.
func enrol(ctx context.Context, cl *client.Client, host string) ([]byte, error) {
	body, _ := json.Marshal(hostkey.EnrollRequest{Host: host})
	resp, err := cl.Raw(ctx, http.MethodPost, "/apis/weft/v1/enroll", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("enrol %s: %w", host, err)
	}
	defer resp.Body.Close()
	var e hostkey.Enrolment
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enrol %s: %s (%v)", host, resp.Status, err)
	}
	return secrets.ParseKey(e.HostKey)
}
