package cniserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/agent"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/netnsfile"
)

// The warm pool keeps endpoints ready for the attachments to come, so that
// an ADD does not wait for the API to create one, the controller to
// compile it and the agent to receive it. A pool endpoint is a real
// Endpoint, created ahead by the agent with its credential on its own
// host: its address (from the host's block of the subnet), security
// identity and compiled policies are reserved, and it is in the agent's
// view. Its spec.netns is a pin: a file in Config.PinDir that names no
// namespace yet, so the agent leaves it unattached and reports it Pending
// (datapath.EndpointStatus.Waiting). It carries the annotation
// AnnotationPool (the selection it serves) and the Host as owner.
//
// An ADD of a selection with a ready pool endpoint claims it: it records
// the attachment in the endpoint's annotations (the one change an agent
// may make to an endpoint's spec or metadata) while it bind-mounts the
// container's namespace on the pin and has the agent attach that endpoint
// alone (agent.Agent.Attach: no Set of the whole view, so a claim costs
// the same on a host with 10 or 1,000 endpoints; concurrent claims share
// one Attach). The driver creates the veth into the namespace: moving a
// pre-created veth into it would cost an RCU barrier, 18-19 ms here
// against 1.5 ms for a create, and serialize claims on the kernel's
// rtnl lock while it waits. Then the ADD waits for the Ready report as an
// ADD that created its endpoint does: the ADD succeeds only once the
// attachment's record and the endpoint's Ready status are both stored
// (the two writes run at the same time). The endpoint, its name and
// address stay; DEL deletes it and unpins the namespace.
//
// Pool size: per selection, the attaches expected within Horizon at the
// recent rate (an exponentially weighted average over 10 s), between Min
// and Max; a selection unused for Idle is emptied. A selection that still
// has ready endpoints is refilled between bursts (refillQuiet), not while
// ADDs claim them. A restarted agent adopts its pool endpoints from the
// API (the annotation names them), finishes or undoes the claims it was
// killed in (an unrecorded bind is undone; the runtime retries its ADD),
// and deletes pins no endpoint names.

// AnnotationPool marks a pool endpoint; its value is the selection it
// serves (JSON).
const AnnotationPool = "cni.weft.io/pool"

// PoolConfig configures the warm pool.
type PoolConfig struct {
	// Max is the most ready endpoints the pool keeps per selection (0: no
	// pool).
	Max int
	// Min is the fewest it keeps per selection it serves (the agent's
	// default selection from the start).
	Min int
	// Horizon: the pool holds the attaches expected within it at the
	// recent rate (default 2 s).
	Horizon time.Duration
	// Idle: a selection without attaches for Idle is emptied (default 10
	// minutes).
	Idle time.Duration
	// PinDir holds the pins (default: "pins-<host>" beside the socket).
	PinDir string
}

func (c PoolConfig) withDefaults() PoolConfig {
	if c.Horizon == 0 {
		c.Horizon = 2 * time.Second
	}
	if c.Idle == 0 {
		c.Idle = 10 * time.Minute
	}
	return c
}

func (c PoolConfig) validate() error {
	switch {
	case c.Max < 0 || c.Min < 0 || c.Min > c.Max:
		return fmt.Errorf("Pool: want 0 <= Min (%d) <= Max (%d)", c.Min, c.Max)
	case c.Horizon < 0 || c.Idle < 0:
		return errors.New("Pool: negative Horizon or Idle")
	case c.PinDir != "" && !filepath.IsAbs(c.PinDir):
		return fmt.Errorf("Pool: PinDir %q is not absolute", c.PinDir)
	}
	return nil
}

// rateTau is the time constant of the attach rate's average.
const rateTau = 10 * time.Second

// refillQuiet: a selection with ready endpoints is refilled once no ADD
// claimed one for this long. A refill costs what an ADD without the pool
// costs (an API create, the controller's compile, a Set, a report); done
// during a burst, it competes with the ADDs the pool serves.
const refillQuiet = 250 * time.Millisecond

// pool is the warm pool of a server.
type pool struct {
	s      *Server
	cfg    PoolConfig
	kick   chan struct{}
	served atomic.Int64
	prog   programmer

	mu   sync.Mutex
	keys map[string]*poolKey
	bad  []*apiv1.Endpoint // found unfit by a claim, for the tick to delete
}

// poolKey is the pool of one selection.
type poolKey struct {
	sel      selection
	ifName   string
	id       string                     // the AnnotationPool value
	ready    []*apiv1.Endpoint          // reported Pending: claimable (LIFO)
	pending  map[string]*apiv1.Endpoint // created, not yet reported; by ID
	creating int
	// rate is the attach rate (per second) averaged until at; count the
	// attaches since.
	rate     float64
	at       time.Time
	count    int
	lastUse  time.Time
	retryAt  time.Time // after a failed create
	failures int
}

func newPool(s *Server) *pool {
	cfg := s.cfg.Pool
	if cfg.PinDir == "" {
		cfg.PinDir = filepath.Join(filepath.Dir(s.cfg.Socket), "pins-"+s.cfg.Host)
	}
	p := &pool{s: s, cfg: cfg, kick: make(chan struct{}, 1), keys: map[string]*poolKey{}}
	p.prog.agent = s.cfg.Agent
	return p
}

// poolSelection is what AnnotationPool holds.
type poolSelection struct {
	Tenant   string            `json:"tenant"`
	VPC      string            `json:"vpc,omitempty"`
	Subnet   string            `json:"subnet"`
	QoSClass string            `json:"qosClass,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	IfName   string            `json:"ifName"`
}

// key returns the pool of sel and ifName, made if needed. p.mu is held.
func (p *pool) key(sel *selection, ifName string) *poolKey {
	b, _ := json.Marshal(poolSelection{Tenant: sel.tenant, VPC: sel.vpc, Subnet: sel.subnet, QoSClass: sel.qosClass, Labels: sel.labels, IfName: ifName})
	id := string(b)
	k := p.keys[id]
	if k == nil {
		now := time.Now()
		k = &poolKey{sel: *sel, ifName: ifName, id: id, pending: map[string]*apiv1.Endpoint{}, at: now, lastUse: now}
		p.keys[id] = k
	}
	return k
}

func (p *pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run keeps every selection's pool at its size until ctx ends.
func (p *pool) run(ctx context.Context) {
	if p.cfg.Max == 0 {
		return
	}
	if d := p.s.cfg.Default; d.Tenant != "" && p.cfg.Min > 0 {
		p.mu.Lock()
		p.key(&selection{tenant: d.Tenant, vpc: d.VPC, subnet: d.Subnet}, "eth0")
		p.mu.Unlock()
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		p.tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// target is k's size now.
func (p *pool) target(k *poolKey, now time.Time) int {
	if dt := now.Sub(k.at); dt > 0 {
		w := math.Exp(-float64(dt) / float64(rateTau))
		k.rate = k.rate*w + float64(k.count)/dt.Seconds()*(1-w)
		k.at, k.count = now, 0
	}
	if now.Sub(k.lastUse) >= p.cfg.Idle && !p.isDefault(k) {
		return 0
	}
	n := int(math.Ceil(k.rate * p.cfg.Horizon.Seconds()))
	return max(p.cfg.Min, min(n, p.cfg.Max))
}

func (p *pool) isDefault(k *poolKey) bool {
	d := p.s.cfg.Default
	return k.sel.tenant == d.Tenant && k.sel.subnet == d.Subnet && k.sel.vpc == d.VPC && k.sel.qosClass == "" && len(k.sel.labels) == 0 && k.ifName == "eth0"
}

// tick promotes the endpoints the agent reported, creates what is missing
// and deletes what is too much.
func (p *pool) tick(ctx context.Context) {
	now := time.Now()
	p.mu.Lock()
	surplus := p.bad
	p.bad = nil
	for id, k := range p.keys {
		surplus = append(surplus, p.promote(k)...)
		target := p.target(k, now)
		for len(k.ready) > target {
			surplus = append(surplus, k.ready[0])
			k.ready = k.ready[1:]
		}
		if target == 0 && len(k.pending) == 0 && k.creating == 0 && len(k.ready) == 0 {
			delete(p.keys, id)
			continue
		}
		if len(k.ready) > 0 && now.Sub(k.lastUse) < refillQuiet {
			continue // claims are coming: refill after the burst
		}
		for have := len(k.ready) + len(k.pending) + k.creating; have < target && k.creating < 8 && now.After(k.retryAt); have++ {
			k.creating++
			if !p.s.life.Go(func(ctx context.Context) { p.fill(ctx, k) }) {
				k.creating--
				break
			}
		}
	}
	p.mu.Unlock()
	for _, ep := range surplus {
		if err := p.s.remove(ctx, ep); err != nil {
			p.s.log.Warn("cni pool: surplus endpoint not deleted", "endpoint", ep.Metadata.Tenant+"/"+ep.Metadata.Name, "err", err)
		}
	}
}

// promote makes ready the pending endpoints of k the agent reported
// reserved and unattached (Pending), and returns those it reported
// otherwise: attached or failed, they are no pool endpoints to hand out.
// p.mu is held.
func (p *pool) promote(k *poolKey) (bad []*apiv1.Endpoint) {
	for eid, ep := range k.pending {
		r, ok := p.s.cfg.Tap.Written(eid)
		switch {
		case !ok || r.UID != ep.Metadata.UID:
		case r.Phase == agent.PhasePending:
			k.ready = append(k.ready, ep)
			delete(k.pending, eid)
		default:
			delete(k.pending, eid)
			bad = append(bad, ep)
		}
	}
	return bad
}

// fill creates one pool endpoint of k.
func (p *pool) fill(ctx context.Context, k *poolKey) {
	ep, err := p.create(ctx, k)
	p.mu.Lock()
	defer p.mu.Unlock()
	k.creating--
	if err != nil {
		k.failures++
		k.retryAt = time.Now().Add(min(time.Duration(k.failures)*100*time.Millisecond, 10*time.Second))
		p.s.log.Warn("cni pool: create failed", "selection", k.id, "err", err)
		return
	}
	k.failures = 0
	k.pending[ep.Metadata.Tenant+"/"+ep.Metadata.Name] = ep
}

// create makes a pool endpoint of k and its pin.
func (p *pool) create(ctx context.Context, k *poolKey) (*apiv1.Endpoint, error) {
	owner, err := p.s.hostRef(ctx)
	if err != nil {
		return nil, err
	}
	var b [hashLen / 2]byte
	_, _ = rand.Read(b[:])
	name := namePrefix + hex.EncodeToString(b[:]) + "-" + k.ifName
	if err := os.MkdirAll(p.cfg.PinDir, 0o700); err != nil {
		return nil, err
	}
	pin := filepath.Join(p.cfg.PinDir, name)
	f, err := os.OpenFile(pin, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return nil, fmt.Errorf("pin: %w", err)
	}
	f.Close()
	ep := &apiv1.Endpoint{
		TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
		Metadata: apiv1.ObjectMeta{Name: name, Tenant: k.sel.tenant, Labels: k.sel.labels,
			Annotations: map[string]string{AnnotationPool: k.id}, OwnerReferences: []apiv1.OwnerReference{owner}},
		Spec: apiv1.EndpointSpec{Subnet: k.sel.subnet, Host: p.s.cfg.Host, Netns: pin, QoSClass: k.sel.qosClass},
	}
	o, err := p.s.cfg.API.Create(ctx, ep)
	if err != nil {
		_ = os.Remove(pin)
		return nil, err
	}
	return o.(*apiv1.Endpoint), nil
}

// claim attaches the container of c to a pool endpoint: ep (an ADD again
// of an attachment it has) or, if nil, a ready endpoint of sel; nil if
// the pool has none (the ADD creates one). The returned endpoint carries
// the attachment's annotations.
func (p *pool) claim(ctx context.Context, c *call, sel *selection, ep *apiv1.Endpoint) (*apiv1.Endpoint, error) {
	if p.cfg.Max == 0 {
		return nil, nil
	}
	if ep == nil {
		p.mu.Lock()
		k := p.key(sel, c.att.ifName)
		k.count++
		k.lastUse = time.Now()
		if len(k.ready) == 0 { // reported since the last tick?
			p.bad = append(p.bad, p.promote(k)...)
		}
		if len(k.ready) > 0 {
			ep = k.ready[len(k.ready)-1]
			k.ready = k.ready[:len(k.ready)-1]
		}
		p.mu.Unlock()
		p.wake()
		if ep == nil {
			return nil, nil
		}
	}
	p.s.setIndex(c.att, ep)
	// Record the attachment while the agent attaches it.
	recorded := make(chan error, 1)
	var out *apiv1.Endpoint
	go func() {
		var err error
		out, err = p.record(ctx, c, ep)
		recorded <- err
	}()
	err := bind(c.req.Netns, ep.Spec.Netns)
	if err == nil {
		err = p.prog.do(ctx, &p.s.life, ep.Metadata.Tenant+"/"+ep.Metadata.Name)
	}
	if rerr := <-recorded; err == nil {
		err = rerr
	}
	if err != nil {
		p.s.cleanup(ep)
		return nil, cniError(types.ErrInternal, "attach a pool endpoint", err)
	}
	p.s.setIndex(c.att, out)
	p.served.Add(1)
	return out, nil
}

// record writes c's attachment into the annotations of pool endpoint ep.
func (p *pool) record(ctx context.Context, c *call, ep *apiv1.Endpoint) (*apiv1.Endpoint, error) {
	next := *ep
	next.Metadata.Annotations = annotations(c.att, c.req.Netns, c.req.Args, c.nc.RuntimeConfig.PodAnnotations)
	next.Metadata.Annotations[AnnotationPool] = ep.Metadata.Annotations[AnnotationPool]
	next.Metadata.ResourceVersion = "" // the agent's status writes do not conflict
	o, err := p.s.cfg.API.Update(ctx, &next)
	if err != nil {
		return nil, fmt.Errorf("record the attachment on %s/%s: %w", ep.Metadata.Tenant, ep.Metadata.Name, err)
	}
	return o.(*apiv1.Endpoint), nil
}

// released unpins the namespace of ep, if it is a pool endpoint. The
// caller deleted it.
func (p *pool) released(ep *apiv1.Endpoint) {
	if ep.Metadata.Annotations[AnnotationPool] == "" {
		return
	}
	if dir, name := filepath.Split(ep.Spec.Netns); filepath.Clean(dir) == filepath.Clean(p.cfg.PinDir) {
		if err := netnsfile.Delete(dir, name); err != nil {
			p.s.log.Warn("cni pool: pin not removed", "pin", ep.Spec.Netns, "err", err)
		}
	}
}

// adopt takes over the pool endpoints of an earlier agent of this host
// among eps (its endpoints): it pins the namespaces of the claimed ones
// again if they were unpinned, undoes the binds of claims it was killed in
// before recording them, and deletes pins no endpoint names. It returns
// the endpoints to delete.
func (p *pool) adopt(eps []*apiv1.Endpoint) (undo []*apiv1.Endpoint, err error) {
	pins := map[string]bool{}
	p.mu.Lock()
	for _, ep := range eps {
		an := ep.Metadata.Annotations
		if an[AnnotationPool] == "" {
			continue
		}
		pins[filepath.Base(ep.Spec.Netns)] = true
		if an[AnnotationContainerID] != "" {
			if !isNetns(ep.Spec.Netns) && isNetns(an[AnnotationNetns]) {
				if err := bind(an[AnnotationNetns], ep.Spec.Netns); err != nil {
					p.s.log.Warn("cni pool: claimed endpoint not pinned again", "endpoint", ep.Metadata.Name, "err", err)
				}
			}
			continue
		}
		var ps poolSelection
		if err := json.Unmarshal([]byte(an[AnnotationPool]), &ps); err != nil || ps.Tenant == "" || ps.Subnet == "" || p.cfg.Max == 0 {
			undo = append(undo, ep)
			continue
		}
		if isNetns(ep.Spec.Netns) {
			// Killed in a claim it had not recorded: the runtime's ADD
			// failed and is retried; the endpoint goes back to the pool.
			_ = unix.Unmount(ep.Spec.Netns, unix.MNT_DETACH)
		}
		k := p.key(&selection{tenant: ps.Tenant, vpc: ps.VPC, subnet: ps.Subnet, qosClass: ps.QoSClass, labels: ps.Labels}, ps.IfName)
		k.pending[ep.Metadata.Tenant+"/"+ep.Metadata.Name] = ep
	}
	n := len(p.keys)
	p.mu.Unlock()
	ents, err := os.ReadDir(p.cfg.PinDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		if !pins[e.Name()] && strings.HasPrefix(e.Name(), namePrefix) {
			_ = netnsfile.Delete(p.cfg.PinDir, e.Name())
		}
	}
	p.s.log.Info("cni pool adopted", "selections", n, "to_delete", len(undo))
	return undo, nil
}

// bind pins the namespace at netns on pin (already pinned to it is fine).
func bind(netns, pin string) error {
	if isNetns(pin) {
		var a, b unix.Stat_t
		if unix.Stat(pin, &a) == nil && unix.Stat(netns, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino {
			return nil
		}
		return fmt.Errorf("pin %s holds another namespace", pin)
	}
	if err := unix.Mount(netns, pin, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("pin %s on %s: %w", netns, pin, err)
	}
	return nil
}

// isNetns reports whether path is a network namespace.
func isNetns(path string) bool {
	var fs unix.Statfs_t
	return path != "" && unix.Statfs(path, &fs) == nil && fs.Type == unix.NSFS_MAGIC
}

// ready returns the ready pool endpoints of every selection.
func (p *pool) ready() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, k := range p.keys {
		n += len(k.ready)
	}
	return n
}

// PoolReady is the number of pool endpoints ready to be claimed.
func (s *Server) PoolReady() int { return s.pool.ready() }

// PoolServed is the number of ADDs the pool served.
func (s *Server) PoolServed() int { return int(s.pool.served.Load()) }

// programmer has the agent attach the endpoints of claims, one Attach at
// a time: a claim waits for an Attach that began after it asked, and one
// Attach serves every claim that asked before it began (concurrent claims
// are attached together).
type programmer struct {
	agent Attacher

	mu          sync.Mutex
	asked, done uint64
	ids         []string // of the claims that asked since the last Attach began
	running     bool
	changed     chan struct{} // closed when done changes
}

// do asks for the attach of endpoint id and waits for it. Its error is not
// the claim's: the endpoint's report says how it went.
func (g *programmer) do(ctx context.Context, life interface {
	Go(func(context.Context)) bool
}, id string) error {
	if g.agent == nil {
		return errors.New("the CNI server has no agent to program")
	}
	g.mu.Lock()
	g.asked++
	ticket := g.asked
	g.ids = append(g.ids, id)
	if g.changed == nil {
		g.changed = make(chan struct{})
	}
	if !g.running {
		g.running = true
		if !life.Go(g.run) {
			g.running = false
			g.mu.Unlock()
			return errors.New("the CNI server is closing")
		}
	}
	for g.done < ticket {
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		g.mu.Lock()
	}
	g.mu.Unlock()
	return nil
}

func (g *programmer) run(ctx context.Context) {
	for {
		g.mu.Lock()
		if g.done == g.asked || ctx.Err() != nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		upto, ids := g.asked, g.ids
		g.ids = nil
		g.mu.Unlock()
		_ = g.agent.Attach(ctx, ids)
		g.mu.Lock()
		g.done = upto
		close(g.changed)
		g.changed = make(chan struct{})
		g.mu.Unlock()
	}
}
