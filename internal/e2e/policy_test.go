package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
)

// The policy tests: two tenants with the same addresses on three hosts,
// each host holding endpoints of both; acme's VPC allows by default,
// globex's denies by default. Every endpoint runs servers that answer with
// its name, so a probe knows which endpoint it reached.

// pep is an endpoint of the policy lab.
type pep struct{ tenant, name, role, host, subnet, ip string }

var policyEPs = []pep{
	{"acme", "web-1", "web", "h1", "web", "10.0.1.10"},
	{"acme", "web-2", "web", "h2", "web", "10.0.1.11"},
	{"acme", "admin", "admin", "h2", "web", "10.0.1.12"},
	{"acme", "free", "misc", "h3", "web", "10.0.1.13"},
	{"acme", "db-1", "db", "h3", "db", "10.0.2.10"},
	{"acme", "db-2", "db", "h1", "db", "10.0.2.11"},
	{"globex", "etl-1", "etl", "h1", "etl", "10.0.1.10"}, // acme/web-1's address, on its host
	{"globex", "etl-2", "etl", "h2", "etl", "10.0.1.11"},
	{"globex", "wh-1", "warehouse", "h3", "wh", "10.0.2.10"},
}

func (p pep) id() string { return p.tenant + "/" + p.name }

// adminRules is the number of rules of acme/admin-many's egress: the most
// a direction may have.
const adminRules = apiv1.MaxRules

// policyDoc is the lab's state: hosts, tenants, VPCs, subnets, the
// endpoints and these policies (each line of the oracle, policyAllows,
// names the ones it follows):
//
//	acme/db-from-web   db: ingress from web on TCP 5432 and ICMP echo; from admin, all
//	acme/db-deny-all   db: ingress [] (0 rules; ORed with db-from-web: adds nothing)
//	acme/web-egress    web: egress to db on TCP 5432 and ICMP; to 10.0.1.0/24 (CIDR), all
//	acme/misc-quiet    misc: ingress [] (0 rules: nothing in)
//	acme/nobody        selects nothing; ingress [] and egress []
//	acme/admin-many    admin: egress adminRules rules: 10.0.0.0/16 on TCP 20000+i,
//	                   db on TCP 7000-7010 (a range), anyone on ICMP
//	globex (VPC defaultPolicy deny: every endpoint isolated both ways)
//	globex/wh-from-etl warehouse: ingress from etl on TCP 7000-7005 and UDP 7001
//	globex/etl         etl: egress to warehouse, all; to 10.0.1.0/24 on ICMP;
//	                   ingress from 10.0.1.0/24 on ICMP
func policyDoc() []byte {
	var b strings.Builder
	b.WriteString(`apiVersion: weft/v1
kind: Host
metadata: {name: h1}
spec: {underlayIP: 192.0.2.11}
---
apiVersion: weft/v1
kind: Host
metadata: {name: h2}
spec: {underlayIP: 192.0.2.12}
---
apiVersion: weft/v1
kind: Host
metadata: {name: h3}
spec: {underlayIP: 192.0.2.13}
`)
	for _, t := range []struct{ tenant, deny, s1, s2 string }{{"acme", "allow", "web", "db"}, {"globex", "deny", "etl", "wh"}} {
		fmt.Fprintf(&b, `---
apiVersion: weft/v1
kind: Tenant
metadata: {name: %[1]s}
---
apiVersion: weft/v1
kind: VPC
metadata: {name: main, tenant: %[1]s}
spec: {cidrs: [10.0.0.0/16], defaultPolicy: %[2]s}
---
apiVersion: weft/v1
kind: Subnet
metadata: {name: %[3]s, tenant: %[1]s}
spec: {vpc: main, cidr: 10.0.1.0/24}
---
apiVersion: weft/v1
kind: Subnet
metadata: {name: %[4]s, tenant: %[1]s}
spec: {vpc: main, cidr: 10.0.2.0/24}
`, t.tenant, t.deny, t.s1, t.s2)
	}
	for _, e := range policyEPs {
		fmt.Fprintf(&b, `---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: %s, tenant: %s, labels: {role: %s}}
spec: {subnet: %s, host: %s, ip: %s}
`, e.name, e.tenant, e.role, e.subnet, e.host, e.ip)
	}
	b.WriteString(`---
apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: db-from-web, tenant: acme}
spec:
  selector: {matchLabels: {role: db}}
  ingress:
    - peers: [{selector: {matchLabels: {role: web}}}]
      ports: [{protocol: TCP, port: 5432}, {protocol: ICMP, icmpType: 8}]
    - peers: [{selector: {matchLabels: {role: admin}}}]
---
apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: db-deny-all, tenant: acme}
spec:
  selector: {matchLabels: {role: db}}
  ingress: []
---
apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: web-egress, tenant: acme}
spec:
  selector: {matchLabels: {role: web}}
  egress:
    - peers: [{selector: {matchLabels: {role: db}}}]
      ports: [{protocol: TCP, port: 5432}, {protocol: ICMP}]
    - peers: [{cidr: 10.0.1.0/24}]
---
apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: misc-quiet, tenant: acme}
spec:
  selector: {matchLabels: {role: misc}}
  ingress: []
---
apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: nobody, tenant: acme}
spec:
  selector: {matchLabels: {role: nobody}}
  ingress: []
  egress: []
---
apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: admin-many, tenant: acme}
spec:
  selector: {matchLabels: {role: admin}}
  egress:
    - peers: [{selector: {matchLabels: {role: db}}}]
      ports: [{protocol: TCP, port: 7000, endPort: 7010}]
    - ports: [{protocol: ICMP}]
`)
	for i := range adminRules - 2 {
		fmt.Fprintf(&b, "    - {peers: [{cidr: 10.0.0.0/16}], ports: [{protocol: TCP, port: %d}]}\n", 20000+i)
	}
	b.WriteString(`---
apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: wh-from-etl, tenant: globex}
spec:
  selector: {matchLabels: {role: warehouse}}
  ingress:
    - peers: [{selector: {matchLabels: {role: etl}}}]
      ports: [{protocol: TCP, port: 7000, endPort: 7005}, {protocol: UDP, port: 7001}]
---
apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: etl, tenant: globex}
spec:
  selector: {matchLabels: {role: etl}}
  egress:
    - peers: [{selector: {matchLabels: {role: warehouse}}}]
    - peers: [{cidr: 10.0.1.0/24}]
      ports: [{protocol: ICMP}]
  ingress:
    - peers: [{cidr: 10.0.1.0/24}]
      ports: [{protocol: ICMP}]
`)
	return []byte(b.String())
}

// probeKind is one kind of probe of the truth table.
type probeKind struct {
	name  string
	proto string // "tcp", "udp", "icmp"
	port  int
}

var (
	tcp5432  = probeKind{"TCP 5432", "tcp", 5432}
	tcp7003  = probeKind{"TCP 7003", "tcp", 7003}
	tcp9999  = probeKind{"TCP 9999", "tcp", 9999}
	udp7001  = probeKind{"UDP 7001", "udp", 7001}
	icmpEcho = probeKind{"ICMP echo", "icmp", 0}

	probeKinds = []probeKind{tcp5432, tcp7003, tcp9999, udp7001, icmpEcho}
)

// policyAllows is the oracle: whether src reaches dst with probe p under
// policyDoc's policies, written from the policies' text, independently of
// the controller's compiler.
func policyAllows(src, dst pep, p probeKind) bool {
	if src.tenant != dst.tenant {
		return false
	}
	in := func(ip, cidr string) bool { return netip.MustParsePrefix(cidr).Contains(netip.MustParseAddr(ip)) }
	if src.tenant == "acme" { // default allow
		egress := true
		switch src.role {
		case "web": // web-egress
			egress = dst.role == "db" && (p == tcp5432 || p == icmpEcho) || in(dst.ip, "10.0.1.0/24")
		case "admin": // admin-many (its TCP 20000+ rules are not probed)
			egress = p == icmpEcho || dst.role == "db" && p == tcp7003
		}
		ingress := true
		switch dst.role {
		case "db": // db-from-web OR db-deny-all
			ingress = src.role == "web" && (p == tcp5432 || p == icmpEcho) || src.role == "admin"
		case "misc": // misc-quiet
			ingress = false
		}
		return egress && ingress
	}
	// globex: default deny.
	egress := src.role == "etl" && (dst.role == "warehouse" || in(dst.ip, "10.0.1.0/24") && p == icmpEcho)
	var ingress bool
	switch dst.role {
	case "warehouse":
		ingress = src.role == "etl" && (p == tcp7003 || p == udp7001)
	case "etl":
		ingress = in(src.ip, "10.0.1.0/24") && p == icmpEcho
	}
	return egress && ingress
}

// policyEnv is the policy lab: a dpEnv with every endpoint serving.
type policyEnv struct {
	*dpEnv
	eps map[string]*apiv1.Endpoint // by tenant/name
}

func (e *policyEnv) ep(p pep) *apiv1.Endpoint { return e.eps[p.id()] }

// serveAll starts, in every endpoint, TCP servers on the probed ports that
// write the endpoint's name and a newline and then echo, and a UDP server
// that answers every datagram with the name.
func (e *policyEnv) serveAll() {
	t := e.t
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ep := range e.eps {
		for _, port := range []int{5432, 7003, 9999} {
			ln, err := testnet.ListenTCP(ep.Status.Netns, fmt.Sprintf(":%d", port))
			if err != nil {
				t.Fatalf("server on %s: %v", epID(ep), err)
			}
			e.servers[fmt.Sprint(epID(ep), " tcp ", port)] = testnet.ServeEcho(ln, epID(ep)+"\n")
		}
		var pc net.PacketConn
		if err := netnsfile.Do(ep.Status.Netns, func() error {
			var err error
			pc, err = net.ListenPacket("udp4", ":7001")
			return err
		}); err != nil {
			t.Fatalf("udp server on %s: %v", epID(ep), err)
		}
		e.servers[epID(ep)+" udp"] = serveNamedUDP(pc, epID(ep))
	}
}

// serveNamedUDP answers every datagram on pc with name.
func serveNamedUDP(pc net.PacketConn, name string) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			_, _ = pc.WriteTo([]byte(name), from)
		}
	}()
	return func() { pc.Close(); <-done }
}

// probe sends p from src to dst's address and reports whether dst
// answered (TCP and UDP: with its name, so an endpoint of another VPC at
// the same address does not count).
func probe(ctx context.Context, src, dst *apiv1.Endpoint, p probeKind) (bool, error) {
	addr := net.JoinHostPort(dst.Status.IP, fmt.Sprint(p.port))
	switch p.proto {
	case "icmp":
		_, err := testnet.Ping(ctx, src.Status.Netns, netip.MustParseAddr(dst.Status.IP))
		return err == nil, err
	case "tcp":
		c, err := testnet.DialTCP(ctx, src.Status.Netns, addr)
		if err != nil {
			return false, err
		}
		defer c.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && line == epID(dst)+"\n", err
	}
	var c net.Conn
	if err := netnsfile.Do(src.Status.Netns, func() error {
		var err error
		c, err = net.Dial("udp4", addr)
		return err
	}); err != nil {
		return false, err
	}
	defer c.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 256)
		n, _ := c.Read(buf)
		got <- string(buf[:n])
	}()
	tk := time.NewTicker(250 * time.Millisecond)
	defer tk.Stop()
	for {
		if _, err := c.Write([]byte("?")); err != nil {
			return false, err
		}
		select {
		case s := <-got:
			return s == epID(dst), nil
		case <-tk.C:
		case <-ctx.Done():
			c.Close() // ends the reader
			<-got
			return false, ctx.Err()
		}
	}
}

// truthTable probes every ordered pair of endpoints with every probe kind
// and checks each verdict against policyAllows. A probe that should pass
// and does not is tried again with a longer timeout (a loaded machine); one
// that should not pass fails the test at once.
func (e *policyEnv) truthTable(t *testing.T) {
	used := map[string]bool{} // tenant ip
	for _, p := range policyEPs {
		used[p.tenant+" "+p.ip] = true
	}
	type result struct {
		src, dst pep
		p        probeKind
		want     bool
		got      bool
		err      error
	}
	var (
		mu      sync.Mutex
		results []result
		skipped int
	)
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(16)
	for _, src := range policyEPs {
		for _, dst := range policyEPs {
			if src == dst {
				continue
			}
			for _, p := range probeKinds {
				if src.tenant != dst.tenant && p == icmpEcho && used[src.tenant+" "+dst.ip] {
					// An echo reply cannot tell which endpoint answered.
					skipped++
					continue
				}
				want := policyAllows(src, dst, p)
				g.Go(func() error {
					var got bool
					var err error
					for try, timeout := range []time.Duration{time.Second, 3 * time.Second, 5 * time.Second} {
						if !want && try > 0 {
							break
						}
						pctx, cancel := context.WithTimeout(ctx, timeout)
						got, err = probe(pctx, e.ep(src), e.ep(dst), p)
						cancel()
						if got {
							break
						}
					}
					mu.Lock()
					results = append(results, result{src, dst, p, want, got, err})
					mu.Unlock()
					return nil
				})
			}
		}
	}
	_ = g.Wait()
	var allowed, denied, sameHost, crossHost int
	for _, r := range results {
		if r.got != r.want {
			t.Errorf("%s -> %s %s: reached %v, want %v (%v)", r.src.id(), r.dst.id(), r.p.name, r.got, r.want, r.err)
		}
		if r.want {
			allowed++
		} else {
			denied++
		}
		if r.src.host == r.dst.host {
			sameHost++
		} else {
			crossHost++
		}
	}
	t.Logf("truth table: %d probes (%d allowed, %d denied; %d same host, %d across hosts), %d cross-tenant echoes skipped",
		len(results), allowed, denied, sameHost, crossHost, skipped)
}

// waitProgrammed waits until every endpoint is Ready with the conditions
// PolicyProgrammed and QoSProgrammed True for its current generation.
func (e *policyEnv) waitProgrammed(t *testing.T, n int) {
	t.Helper()
	eventually(t, 90*time.Second, "every endpoint's policy and QoS programmed", func() (bool, string) {
		eps, err := e.endpoints()
		if err != nil {
			return false, err.Error()
		}
		var bad []string
		for _, ep := range eps {
			for _, typ := range []string{apiv1.ConditionPolicyProgrammed, apiv1.ConditionQoSProgrammed} {
				c := apiv1.FindCondition(ep.Status.Conditions, typ)
				if c == nil || c.Status != apiv1.ConditionTrue || c.ObservedGeneration != ep.Metadata.Generation {
					bad = append(bad, fmt.Sprintf("%s %s=%+v (generation %d)", epID(ep), typ, c, ep.Metadata.Generation))
				}
			}
		}
		return len(eps) == n && len(bad) == 0, fmt.Sprint(len(eps), " endpoints; ", bad)
	})
}

// identities returns every endpoint's status.identity by tenant/name.
func (e *policyEnv) identities(t *testing.T) map[string]uint32 {
	t.Helper()
	eps, err := e.endpoints()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, ep := range eps {
		out[epID(ep)] = ep.Status.Identity
	}
	return out
}

// TestPolicy runs the policy scenarios in order on one lab: the truth
// table, the conditions, identities, policies changed under live
// connections, a controller restart, and a huge policy next to another
// VPC's new endpoint.
func TestPolicy(t *testing.T) { forEachDatapath(t, testPolicy) }

func testPolicy(t *testing.T, datapath string) {
	e := &policyEnv{dpEnv: newDPEnv(t, policyDoc(), datapath)}
	e.eps = e.waitReady(len(policyEPs), 90*time.Second)
	e.serveAll()
	steps := []struct {
		name string
		fn   func(t *testing.T, e *policyEnv)
	}{
		{"Conditions", func(t *testing.T, e *policyEnv) { e.waitProgrammed(t, len(policyEPs)) }},
		{"TruthTable", func(t *testing.T, e *policyEnv) { e.truthTable(t) }},
		{"Identities", testIdentities},
		{"LiveConnections", testLiveConnections},
		{"ControllerRestart", testPolicyControllerRestart},
		{"NoStall", testPolicyNoStall},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.fn(t, e) }) {
			t.Fatalf("%s failed; skipping the rest", s.name)
		}
	}
}

// testIdentities: endpoints of one VPC with the same labels share an
// identity, others do not; identities are per VPC.
func testIdentities(t *testing.T, e *policyEnv) {
	ids := e.identities(t)
	byKey := map[string]uint32{} // tenant role → identity
	for _, p := range policyEPs {
		id := ids[p.id()]
		if id == 0 {
			t.Errorf("%s has no identity", p.id())
			continue
		}
		k := p.tenant + " " + p.role
		if prev, ok := byKey[k]; ok && prev != id {
			t.Errorf("%s: identity %d, another %s endpoint has %d", p.id(), id, k, prev)
		}
		byKey[k] = id
	}
	seen := map[string]string{} // tenant identity → role
	for k, id := range byKey {
		tenant, role, _ := strings.Cut(k, " ")
		key := fmt.Sprint(tenant, " ", id)
		if other, ok := seen[key]; ok {
			t.Errorf("%s: roles %s and %s share identity %d", tenant, role, other, id)
		}
		seen[key] = role
	}
	t.Logf("identities: %v", byKey)
}

// liveConn is a TCP connection that echoes a line every 50 ms and records
// when an echo last came back.
type liveConn struct {
	name string
	c    net.Conn
	mu   sync.Mutex
	ok   time.Time // last echo answered
	stop chan struct{}
	done chan struct{}
}

func startLiveConn(t *testing.T, src, dst *apiv1.Endpoint, port int) *liveConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := testnet.DialTCP(ctx, src.Status.Netns, net.JoinHostPort(dst.Status.IP, fmt.Sprint(port)))
	if err != nil {
		t.Fatalf("connect %s -> %s:%d: %v", epID(src), epID(dst), port, err)
	}
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != epID(dst)+"\n" {
		t.Fatalf("connect %s -> %s:%d: read %q, %v", epID(src), epID(dst), port, line, err)
	}
	l := &liveConn{name: fmt.Sprintf("%s -> %s:%d", epID(src), epID(dst), port), c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tk.C:
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := io.WriteString(c, "x\n"); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					return
				}
			}
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if line, err := r.ReadString('\n'); err == nil && line == "x\n" {
				l.mu.Lock()
				l.ok = time.Now()
				l.mu.Unlock()
			}
		}
	}()
	t.Cleanup(l.close)
	return l
}

func (l *liveConn) close() {
	select {
	case <-l.stop:
		return
	default:
	}
	close(l.stop)
	l.c.Close()
	<-l.done
}

func (l *liveConn) lastOK() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok
}

// answersAfter waits until the connection answers an echo sent after t,
// for at most d.
func (l *liveConn) answersAfter(t time.Time, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if l.lastOK().After(t) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// whenRefused tries new connections from src to dst:port (200 ms each)
// until one fails, and returns when that attempt started: the change that
// stopped them was in force by then.
func whenRefused(t *testing.T, src, dst *apiv1.Endpoint, port int) time.Time {
	t.Helper()
	return whenVerdict(t, src, dst, probeKind{"", "tcp", port}, false)
}

// whenVerdict probes src -> dst with p until the verdict is want twice in
// a row (one slow answer on a loaded machine is not a refusal) and returns
// when the first of the two started.
func whenVerdict(t *testing.T, src, dst *apiv1.Endpoint, p probeKind, want bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var first time.Time
	for time.Now().Before(deadline) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		got, _ := probe(ctx, src, dst, p)
		cancel()
		switch {
		case got != want:
			first = time.Time{}
		case !first.IsZero():
			return first
		default:
			first = start
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s -> %s %s: verdict %v not reached within 30s", epID(src), epID(dst), p.name, want)
	return time.Time{}
}

// checkDies: a live connection the change no longer allows answers no
// echo sent more than a second after the change was in force (enforced),
// and none later.
func checkDies(t *testing.T, l *liveConn, enforced time.Time) {
	t.Helper()
	time.Sleep(time.Until(enforced.Add(2 * time.Second)))
	last := l.lastOK()
	if last.After(enforced.Add(time.Second)) {
		t.Errorf("%s: still answered %s after the change was enforced (want dead within 1s)", l.name, last.Sub(enforced).Round(time.Millisecond))
		return
	}
	t.Logf("%s: last echo %s after the change was enforced", l.name, last.Sub(enforced).Round(time.Millisecond))
}

func (e *policyEnv) apply(t *testing.T, doc string) {
	t.Helper()
	objs, err := apiv1.DecodeDocuments([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, _, err := e.cl.Apply(context.Background(), o); err != nil {
			t.Fatalf("apply %s: %v", apiv1.RefOf(o), err)
		}
	}
}

func (e *policyEnv) deletePolicy(t *testing.T, tenant, name string) {
	t.Helper()
	if _, err := e.cl.Delete(context.Background(), apiv1.KindSecurityPolicy, tenant, name); err != nil {
		t.Fatalf("delete policy %s/%s: %v", tenant, name, err)
	}
}

const adminLockdown = `apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: admin-lockdown, tenant: acme}
spec:
  selector: {matchLabels: {role: admin}}
  ingress:
    - peers: [{selector: {matchLabels: {role: web}}}]
      ports: [{protocol: TCP, port: 5432}]
`

// dbFromWeb is acme/db-from-web; without web, only admin may come in.
func dbFromWeb(web bool) string {
	s := `apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: db-from-web, tenant: acme}
spec:
  selector: {matchLabels: {role: db}}
  ingress:
    - peers: [{selector: {matchLabels: {role: admin}}}]
`
	if web {
		s += `    - peers: [{selector: {matchLabels: {role: web}}}]
      ports: [{protocol: TCP, port: 5432}, {protocol: ICMP, icmpType: 8}]
`
	}
	return s
}

// testLiveConnections changes policies under live connections: a change
// that no longer allows one drops it within a second of being enforced
// (conntrack flushed), connections still allowed survive every change, and
// a dropped connection stays dead after the policy that dropped it goes.
func testLiveConnections(t *testing.T, e *policyEnv) {
	ep := func(tenant, name string) *apiv1.Endpoint { return e.eps[tenant+"/"+name] }
	web1, web2, admin, db1, free := ep("acme", "web-1"), ep("acme", "web-2"), ep("acme", "admin"), ep("acme", "db-1"), ep("acme", "free")
	etl1, wh1 := ep("globex", "etl-1"), ep("globex", "wh-1")
	dbConn := startLiveConn(t, web1, db1, 5432)      // across hosts
	adminConn := startLiveConn(t, web2, admin, 9999) // same host
	whConn := startLiveConn(t, etl1, wh1, 7003)      // default-deny VPC, across hosts
	survivors := []*liveConn{dbConn, whConn}
	for _, l := range append(survivors, adminConn) {
		if !l.answersAfter(time.Now(), 5*time.Second) {
			t.Fatalf("%s: no echo before any change", l.name)
		}
	}
	alive := func(step string, since time.Time, ls ...*liveConn) {
		t.Helper()
		for _, l := range ls {
			if !l.answersAfter(since, 5*time.Second) {
				t.Errorf("%s: %s: no echo after the change, want the connection to survive", step, l.name)
			}
		}
	}

	// A policy added: admin takes only TCP 5432 from web.
	e.apply(t, adminLockdown)
	enforced := whenRefused(t, web2, admin, 9999)
	checkDies(t, adminConn, enforced)
	alive("admin-lockdown added", enforced, survivors...)

	// The policy removed: new connections pass again; the dropped one
	// stays dead (its state was flushed, and what is not a SYN starts
	// nothing).
	e.deletePolicy(t, "acme", "admin-lockdown")
	enforced = whenVerdict(t, web2, admin, tcp9999, true)
	if adminConn.answersAfter(enforced, 2*time.Second) {
		t.Errorf("%s: answers again after admin-lockdown was deleted, want it to stay dead", adminConn.name)
	}
	alive("admin-lockdown deleted", enforced, survivors...)

	// A contradicting policy (ingress []) deleted: db-from-web still
	// isolates db.
	e.deletePolicy(t, "acme", "db-deny-all")
	since := time.Now()
	alive("db-deny-all deleted", since, survivors...)
	time.Sleep(time.Second) // let every agent program it
	for _, p := range []probeKind{tcp5432, tcp9999} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if got, _ := probe(ctx, free, db1, p); got {
			t.Errorf("free -> db-1 %s passes with db-from-web in force", p.name)
		}
		cancel()
	}

	// A policy updated so that it no longer allows web -> db: the live
	// connection dies (dropped by db's host, where ingress is enforced),
	// the globex one survives; then restored.
	e.apply(t, dbFromWeb(false))
	enforced = whenRefused(t, web1, db1, 5432)
	checkDies(t, dbConn, enforced)
	alive("db-from-web without web", enforced, whConn)
	e.apply(t, dbFromWeb(true))
	whenVerdict(t, web1, db1, tcp5432, true)
	e.apply(t, `apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: db-deny-all, tenant: acme}
spec:
  selector: {matchLabels: {role: db}}
  ingress: []
`)
}

// testPolicyControllerRestart: the controller restarts on its data dir;
// the identities are the same, and the truth table still holds once the
// agents are back.
func testPolicyControllerRestart(t *testing.T, e *policyEnv) {
	before := e.identities(t)
	e.ctl.stop(t)
	e.startController()
	after := e.identities(t)
	for id, want := range before {
		if after[id] != want {
			t.Errorf("%s: identity %d after the restart, was %d", id, after[id], want)
		}
	}
	eventually(t, 30*time.Second, "every host Alive again", func() (bool, string) {
		objs, _, err := e.cl.List(context.Background(), apiv1.KindHost, "", "")
		if err != nil {
			return false, err.Error()
		}
		var s []string
		alive := 0
		for _, o := range objs {
			h := o.(*apiv1.Host)
			s = append(s, h.Metadata.Name+"="+h.Status.Liveness)
			if h.Status.Liveness == apiv1.LivenessAlive && h.Status.LastError == "" {
				alive++
			}
		}
		return alive == 3, fmt.Sprint(s)
	})
	e.waitProgrammed(t, len(policyEPs))
	e.truthTable(t)
}

// testPolicyNoStall: a policy with the most rules allowed, applied to every
// acme endpoint, and refused policies do not hold up another VPC: a new
// globex endpoint becomes Ready with its conditions True and is enforced.
func testPolicyNoStall(t *testing.T, e *policyEnv) {
	var b strings.Builder
	b.WriteString(`apiVersion: weft/v1
kind: SecurityPolicy
metadata: {name: huge, tenant: acme}
spec:
  selector: {}
  ingress:
`)
	for i := range apiv1.MaxRules {
		fmt.Fprintf(&b, "    - {peers: [{cidr: 10.%d.%d.0/24}], ports: [{protocol: UDP, port: %d}]}\n", 100+i/250, i%250, 30000+i)
	}
	huge := b.String()
	start := time.Now()
	e.apply(t, huge)
	tooBig := strings.Replace(huge, "name: huge", "name: too-big", 1) + "    - {peers: [{cidr: 10.99.0.0/24}]}\n"
	if objs, err := apiv1.DecodeDocuments([]byte(tooBig)); err != nil {
		t.Fatal(err)
	} else if _, err := e.cl.Create(context.Background(), objs[0]); apiv1.ReasonOf(err) != apiv1.ReasonInvalid {
		t.Errorf("a policy of %d rules: %v, want 422", apiv1.MaxRules+1, err)
	}
	wh2 := pep{"globex", "wh-2", "warehouse", "h1", "wh", "10.0.2.20"}
	e.apply(t, fmt.Sprintf(`apiVersion: weft/v1
kind: Endpoint
metadata: {name: %s, tenant: %s, labels: {role: %s}}
spec: {subnet: %s, host: %s, ip: %s}
`, wh2.name, wh2.tenant, wh2.role, wh2.subnet, wh2.host, wh2.ip))
	e.eps = e.waitReady(len(policyEPs)+1, 60*time.Second)
	e.waitProgrammed(t, len(policyEPs)+1)
	t.Logf("a new endpoint of globex programmed %s after a %d-rule policy on every acme endpoint", time.Since(start).Round(time.Millisecond), apiv1.MaxRules)
	e.mu.Lock()
	ln, err := testnet.ListenTCP(e.ep(wh2).Status.Netns, ":7003")
	if err != nil {
		e.mu.Unlock()
		t.Fatal(err)
	}
	e.servers[wh2.id()+" tcp 7003"] = testnet.ServeEcho(ln, wh2.id()+"\n")
	e.mu.Unlock()
	etl1 := e.eps["globex/etl-1"]
	for _, c := range []struct {
		p    probeKind
		want bool
	}{{tcp7003, true}, {tcp9999, false}} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		got, err := probe(ctx, etl1, e.ep(wh2), c.p)
		cancel()
		if got != c.want {
			t.Errorf("globex/etl-1 -> %s %s: reached %v, want %v (%v)", wh2.id(), c.p.name, got, c.want, err)
		}
	}
	// acme still holds: web-1 -> db-1 on 5432 passes (db-from-web OR huge).
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, err := probe(ctx, e.eps["acme/web-1"], e.eps["acme/db-1"], tcp5432); !got {
		t.Errorf("acme/web-1 -> acme/db-1 TCP 5432 with huge in force: %v", err)
	}
}
