package conformance

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
)

// The policy tests: the semantics of datapath.EndpointPolicy checked with
// traffic between endpoints of one host, and the containment of a VPC that
// cannot be programmed.

// connDeadline bounds how long a connection a policy change no longer
// allows may live on: an exchange begun when Set returns must not be
// answered within it.
const connDeadline = time.Second

// polEP is an endpoint of the policy fixture.
type polEP struct {
	id       string
	vni      uint32
	subnet   string
	ip       string
	identity uint32
}

// The policy fixture: two tenants with the same addresses and the same
// identity numbers (identities are per VPC).
var polEPs = []polEP{
	{"acme/web1", 100, "a", "10.0.1.10", 10},
	{"acme/web2", 100, "a", "10.0.1.11", 10},
	{"acme/db", 100, "b", "10.0.2.10", 20},
	{"acme/other", 100, "b", "10.0.2.11", 30},
	{"zeta/web", 200, "a", "10.0.1.10", 10},
	{"zeta/db", 200, "b", "10.0.2.10", 20},
}

func polEndpoint(id string) polEP {
	for _, e := range polEPs {
		if e.id == id {
			return e
		}
	}
	panic("conformance: no policy fixture endpoint " + id)
}

// policies maps endpoint IDs to their policy (absent: none) and, for the
// tests that change identities, identity overrides.
type policies struct {
	pol      map[string]*datapath.EndpointPolicy
	identity map[string]uint32
}

func (s *suite) policyState(p policies) *datapath.Desired {
	zeta := vpcAcme()
	zeta.Tenant, zeta.VNI = "zeta", 200
	d := &datapath.Desired{Host: s.host, VPCs: []datapath.VPC{vpcAcme(), zeta}}
	for _, pe := range polEPs {
		e := ep(pe.id, pe.vni, pe.subnet, pe.ip)
		e.Identity = pe.identity
		if id, ok := p.identity[pe.id]; ok {
			e.Identity = id
		}
		e.Policy = p.pol[pe.id]
		d.Endpoints = append(d.Endpoints, e)
	}
	return d
}

// Rule builders.

func ingress(rs ...datapath.Rule) *datapath.EndpointPolicy {
	return &datapath.EndpointPolicy{IngressIsolated: true, Ingress: rs}
}

func egress(rs ...datapath.Rule) *datapath.EndpointPolicy {
	return &datapath.EndpointPolicy{EgressIsolated: true, Egress: rs}
}

func fromIDs(ports []datapath.Port, ids ...uint32) datapath.Rule {
	return datapath.Rule{Name: fmt.Sprintf("ids %v", ids), Identities: ids, Ports: ports}
}

func toNets(ports []datapath.Port, nets ...string) datapath.Rule {
	r := datapath.Rule{Name: fmt.Sprintf("nets %v", nets), Ports: ports}
	for _, n := range nets {
		r.Prefixes = append(r.Prefixes, netip.MustParsePrefix(n))
	}
	return r
}

func allPeers(ports ...datapath.Port) datapath.Rule {
	return datapath.Rule{Name: "all", AllPeers: true, Ports: ports}
}

func tcpPorts(first, last uint16) []datapath.Port {
	return []datapath.Port{{Protocol: datapath.ProtoTCP, First: first, Last: last}}
}

func icmpPort(typ, code int16) datapath.Port {
	return datapath.Port{Protocol: datapath.ProtoICMP, ICMPType: typ, ICMPCode: code}
}

// A probe and its expected verdict.
type probe struct {
	from, to string
	proto    datapath.Protocol
	port     uint16 // TCP/UDP port or ICMP type
	want     bool
}

func tcpP(from, to string, port uint16, want bool) probe {
	return probe{from, to, datapath.ProtoTCP, port, want}
}

func udpP(from, to string, port uint16, want bool) probe {
	return probe{from, to, datapath.ProtoUDP, port, want}
}

func icmpP(from, to string, typ uint16, want bool) probe {
	return probe{from, to, datapath.ProtoICMP, typ, want}
}

func (p probe) flow() Flow {
	from, to := polEndpoint(p.from), polEndpoint(p.to)
	f := Flow{From: p.from, To: p.to, Src: ip(from.ip), Dst: ip(to.ip), Proto: p.proto}
	if p.proto == datapath.ProtoICMP {
		f.ICMPType = uint8(p.port)
	} else {
		f.Port = p.port
	}
	return f
}

// Case is a flow and whether it must pass.
type Case struct {
	Flow
	Want bool
}

// CheckAll sends every case with probe (the ones sharing a server, that
// is destination, protocol and port, one after the other, the rest in
// parallel), waiting for an answer up to 2 s for a case that must pass and
// 300 ms for one that must not, and returns a line for every wrong
// verdict, sorted.
func CheckAll(ctx context.Context, cases []Case, probe func(context.Context, Flow) error) []string {
	type server struct {
		to    string
		proto datapath.Protocol
		port  uint16
		icmp  uint8
	}
	groups := map[server][]Case{}
	for _, c := range cases {
		k := server{c.To, c.Proto, c.Port, c.ICMPType}
		groups[k] = append(groups[k], c)
	}
	var mu sync.Mutex
	var wrong []string
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range g {
				wait := positiveWait
				if !c.Want {
					wait = negativeWait
				}
				pctx, cancel := context.WithTimeout(ctx, wait)
				err := probe(pctx, c.Flow)
				cancel()
				if got := err == nil; got != c.Want {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%s: allowed=%v, want %v (%v)", c.Flow, got, c.Want, err))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	slices.Sort(wrong)
	return wrong
}

// probeAll checks the probes' verdicts.
func (s *suite) probeAll(t *testing.T, probes []probe) {
	t.Helper()
	cases := make([]Case, len(probes))
	for i, p := range probes {
		cases[i] = Case{p.flow(), p.want}
	}
	for _, w := range CheckAll(t.Context(), cases, func(ctx context.Context, f Flow) error { return s.flows.Probe(ctx, s.d, f) }) {
		t.Error(w)
	}
}

// policyCase is one policy state of the truth table.
type policyCase struct {
	name   string
	p      policies
	probes []probe
}

func truthTable() []policyCase {
	pol := func(kv ...any) policies {
		p := policies{pol: map[string]*datapath.EndpointPolicy{}}
		for i := 0; i < len(kv); i += 2 {
			p.pol[kv[i].(string)] = kv[i+1].(*datapath.EndpointPolicy)
		}
		return p
	}
	many := func(n int) *datapath.EndpointPolicy {
		rs := make([]datapath.Rule, 0, n+1)
		for i := range n {
			rs = append(rs, fromIDs(tcpPorts(uint16(10000+i%50000), 0), uint32(1000+i)))
		}
		return ingress(append(rs, fromIDs(tcpPorts(5432, 0), 10))...)
	}
	return []policyCase{
		{"no policy allows everything", policies{}, []probe{
			tcpP("acme/web1", "acme/db", 5432, true), udpP("acme/web1", "acme/db", 53, true), icmpP("acme/web1", "acme/db", 8, true),
			tcpP("acme/db", "acme/web1", 80, true), tcpP("acme/other", "acme/web2", 80, true),
			tcpP("zeta/web", "zeta/db", 5432, true),
		}},
		{"ingress by identity and port", pol("acme/db", ingress(fromIDs(tcpPorts(5432, 0), 10))), []probe{
			tcpP("acme/web1", "acme/db", 5432, true), tcpP("acme/web2", "acme/db", 5432, true),
			tcpP("acme/web1", "acme/db", 5433, false), tcpP("acme/other", "acme/db", 5432, false),
			udpP("acme/web1", "acme/db", 5432, false), icmpP("acme/web1", "acme/db", 8, false),
			// db itself may start connections (egress not isolated); the
			// answers come back although db's ingress is isolated.
			tcpP("acme/db", "acme/web1", 80, true), udpP("acme/db", "acme/other", 53, true), icmpP("acme/db", "acme/web2", 8, true),
			// The same identity number in the other tenant is another
			// identity: zeta is not affected.
			tcpP("zeta/web", "zeta/db", 5433, true), tcpP("zeta/web", "zeta/db", 5432, true),
		}},
		{"egress by prefix", pol("acme/web1", egress(toNets(tcpPorts(5432, 0), "10.0.2.0/24"))), []probe{
			tcpP("acme/web1", "acme/db", 5432, true), tcpP("acme/web1", "acme/other", 5432, true),
			tcpP("acme/web1", "acme/db", 80, false), tcpP("acme/web1", "acme/web2", 5432, false),
			udpP("acme/web1", "acme/db", 5432, false), icmpP("acme/web1", "acme/db", 8, false),
			// Others reach web1, and web1's answers pass its egress.
			tcpP("acme/web2", "acme/web1", 80, true), icmpP("acme/db", "acme/web1", 8, true),
			tcpP("zeta/web", "zeta/db", 80, true),
		}},
		{"ingress by prefix", pol("acme/db", ingress(toNets([]datapath.Port{{Protocol: datapath.ProtoUDP, First: 53}}, "10.0.1.0/24"))), []probe{
			udpP("acme/web1", "acme/db", 53, true), udpP("acme/web2", "acme/db", 53, true),
			udpP("acme/other", "acme/db", 53, false), udpP("acme/web1", "acme/db", 54, false), tcpP("acme/web1", "acme/db", 53, false),
		}},
		{"port range", pol("acme/db", ingress(allPeers(tcpPorts(8000, 8010)...))), []probe{
			tcpP("acme/web1", "acme/db", 7999, false), tcpP("acme/web1", "acme/db", 8000, true),
			tcpP("acme/web2", "acme/db", 8005, true), tcpP("acme/other", "acme/db", 8010, true), tcpP("acme/web1", "acme/db", 8011, false),
		}},
		{"every port of a protocol", pol("acme/db", ingress(allPeers(tcpPorts(0, 0)...))), []probe{
			tcpP("acme/web1", "acme/db", 1, true), tcpP("acme/web1", "acme/db", 65535, true), udpP("acme/web1", "acme/db", 53, false),
		}},
		{"ICMP by type", pol("acme/db", ingress(allPeers(icmpPort(8, -1)))), []probe{
			icmpP("acme/web1", "acme/db", 8, true), icmpP("acme/web1", "acme/db", 13, false), tcpP("acme/web1", "acme/db", 80, false),
		}},
		{"ICMP by type and code", pol("acme/db", ingress(allPeers(icmpPort(13, 0)))), []probe{
			icmpP("acme/web1", "acme/db", 13, true), icmpP("acme/web1", "acme/db", 8, false),
		}},
		{"ICMP other code", pol("acme/db", ingress(allPeers(icmpPort(8, 1)))), []probe{
			icmpP("acme/web1", "acme/db", 8, false),
		}},
		{"ICMP any", pol("acme/db", ingress(allPeers(icmpPort(-1, -1)))), []probe{
			icmpP("acme/web1", "acme/db", 8, true), icmpP("acme/web1", "acme/db", 13, true), udpP("acme/web1", "acme/db", 53, false),
		}},
		{"all peers, every protocol", pol("acme/db", ingress(allPeers())), []probe{
			tcpP("acme/web1", "acme/db", 80, true), udpP("acme/other", "acme/db", 53, true), icmpP("acme/web2", "acme/db", 8, true),
		}},
		{"empty peers match nothing", pol("acme/db", ingress(datapath.Rule{Name: "selects nobody", Ports: tcpPorts(5432, 0)})), []probe{
			tcpP("acme/web1", "acme/db", 5432, false), icmpP("acme/web1", "acme/db", 8, false),
		}},
		{"isolated with zero rules", pol("acme/db", &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true}), []probe{
			tcpP("acme/web1", "acme/db", 5432, false), icmpP("acme/other", "acme/db", 8, false),
			tcpP("acme/db", "acme/web1", 80, false), icmpP("acme/db", "acme/web2", 8, false),
			tcpP("acme/web1", "acme/web2", 80, true),
		}},
		{"rules are ORed", pol("acme/db", ingress(fromIDs(tcpPorts(5432, 0), 10), toNets(tcpPorts(9000, 0), "10.0.2.11/32"))), []probe{
			tcpP("acme/web1", "acme/db", 5432, true), tcpP("acme/web1", "acme/db", 9000, false),
			tcpP("acme/other", "acme/db", 9000, true), tcpP("acme/other", "acme/db", 5432, false),
		}},
		{"both ends isolated", pol(
			"acme/web1", egress(allPeers(tcpPorts(5432, 0)...)),
			"acme/db", ingress(fromIDs(tcpPorts(5432, 0), 10)),
		), []probe{
			tcpP("acme/web1", "acme/db", 5432, true), tcpP("acme/web2", "acme/db", 5432, true),
			tcpP("acme/web1", "acme/web2", 5432, true), tcpP("acme/web1", "acme/web2", 80, false),
			tcpP("acme/other", "acme/db", 5432, false),
		}},
		{"default deny in a VPC", pol(
			"acme/web1", &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true},
			"acme/web2", &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true},
			"acme/db", &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true, Ingress: []datapath.Rule{fromIDs(tcpPorts(5432, 0), 10)}},
			"acme/other", &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true},
		), []probe{
			// web1's egress is closed too.
			tcpP("acme/web1", "acme/db", 5432, false), tcpP("acme/web1", "acme/web2", 80, false),
			icmpP("acme/other", "acme/db", 8, false), tcpP("acme/db", "acme/other", 80, false),
			tcpP("zeta/web", "zeta/db", 5432, true),
		}},
		{"default deny with an allowed path", pol(
			"acme/web1", &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true, Egress: []datapath.Rule{toNets(tcpPorts(5432, 0), "10.0.2.10/32")}},
			"acme/db", &datapath.EndpointPolicy{IngressIsolated: true, EgressIsolated: true, Ingress: []datapath.Rule{fromIDs(tcpPorts(5432, 0), 10)}},
		), []probe{
			tcpP("acme/web1", "acme/db", 5432, true), tcpP("acme/web1", "acme/db", 5433, false),
			tcpP("acme/db", "acme/web1", 5432, false),
		}},
		{"many rules", pol("acme/db", many(1000)), []probe{
			tcpP("acme/web1", "acme/db", 5432, true), tcpP("acme/web1", "acme/db", 10000, false), tcpP("acme/other", "acme/db", 5432, false),
		}},
	}
}

// testPolicyTruthTable sets each policy state in turn (each Set converges
// from the previous state) and checks every probe's verdict.
func testPolicyTruthTable(t *testing.T, s *suite) {
	for _, tc := range truthTable() {
		t.Run(tc.name, func(t *testing.T) {
			d := s.policyState(tc.p)
			s.set(t, d)
			noWrites(t, "repeated Set", s.set(t, d))
			s.check(t, d, nil)
			s.probeAll(t, tc.probes)
		})
	}
}

// testPolicyGateway: an endpoint whose egress is isolated reaches its
// gateway only if a rule allows it.
func testPolicyGateway(t *testing.T, s *suite) {
	gw := ip("10.0.1.1")
	s.set(t, s.policyState(policies{pol: map[string]*datapath.EndpointPolicy{"acme/web1": egress()}}))
	s.reach(t, "acme/web1", gw, false)
	s.reach(t, "acme/web2", gw, true)
	s.set(t, s.policyState(policies{pol: map[string]*datapath.EndpointPolicy{"acme/web1": egress(toNets(nil, "10.0.1.1/32"))}}))
	s.reach(t, "acme/web1", gw, true)
}

// testPolicyLiveConnections changes policies under live TCP connections: a
// change that still allows a connection leaves it alone; one that does not
// kills it by the time Set returns, whichever end's policy changed, and the
// other end's answers cannot revive it.
func testPolicyLiveConnections(t *testing.T, s *suite) {
	dbRule := func(port uint16) map[string]*datapath.EndpointPolicy {
		return map[string]*datapath.EndpointPolicy{"acme/db": ingress(fromIDs(tcpPorts(port, 0), 10))}
	}
	f := tcpP("acme/web1", "acme/db", 5432, true).flow()
	steps := []struct {
		name  string
		p     policies
		alive bool
	}{
		{"no policy", policies{}, true},
		{"policy added that allows it", policies{pol: dbRule(5432)}, true},
		{"unrelated rule added", policies{pol: map[string]*datapath.EndpointPolicy{"acme/db": ingress(fromIDs(tcpPorts(5432, 0), 10), allPeers(icmpPort(8, -1)))}}, true},
		{"identity of the other end changed", policies{pol: dbRule(5432), identity: map[string]uint32{"acme/web1": 11}}, false},
		{"rule removed", policies{pol: dbRule(5433)}, false},
		{"egress of the client closed", policies{pol: map[string]*datapath.EndpointPolicy{"acme/web1": egress(toNets(tcpPorts(80, 0), "10.0.2.10/32"))}}, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			// Each step starts from no policy with a fresh connection.
			s.set(t, s.policyState(policies{}))
			c := s.connect(t, f)
			s.set(t, s.policyState(st.p))
			wait := positiveWait // generous for one that must answer
			if !st.alive {
				wait = connDeadline
			}
			ctx, cancel := context.WithTimeout(t.Context(), wait)
			err := c.Exchange(ctx)
			cancel()
			switch {
			case st.alive && err != nil:
				t.Errorf("connection still allowed died: %v", err)
			case !st.alive && err == nil:
				t.Errorf("connection no longer allowed still answered after Set returned")
			}
			if !st.alive {
				// Nor does it come back later.
				ctx, cancel := context.WithTimeout(t.Context(), negativeWait)
				defer cancel()
				if err := c.Exchange(ctx); err == nil {
					t.Errorf("connection no longer allowed answered again")
				}
			}
		})
	}
}

func (s *suite) connect(t *testing.T, f Flow) Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), positiveWait)
	defer cancel()
	c, err := s.flows.Connect(ctx, s.d, f)
	if err != nil {
		t.Fatalf("connect %s: %v", f, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel = context.WithTimeout(t.Context(), positiveWait)
	defer cancel()
	if err := c.Exchange(ctx); err != nil {
		t.Fatalf("exchange over %s: %v", f, err)
	}
	return c
}

// testPolicyTenantsShareNoState: a connection of one tenant does not open
// the identical 5-tuple of another tenant with the same addresses.
func testPolicyTenantsShareNoState(t *testing.T, s *suite) {
	s.set(t, s.policyState(policies{}))
	acme := tcpP("acme/web1", "acme/db", 5432, true).flow()
	acme.SrcPort = 40123
	c := s.connect(t, acme)
	s.set(t, s.policyState(policies{pol: map[string]*datapath.EndpointPolicy{"zeta/db": ingress()}}))
	zeta := tcpP("zeta/web", "zeta/db", 5432, false).flow()
	zeta.SrcPort = 40123
	ctx, cancel := context.WithTimeout(t.Context(), negativeWait)
	defer cancel()
	if err := s.flows.Probe(ctx, s.d, zeta); err == nil {
		t.Errorf("%s passed zeta/db's closed ingress while acme had the same connection open", zeta)
	}
	ctx, cancel = context.WithTimeout(t.Context(), positiveWait)
	defer cancel()
	if err := c.Exchange(ctx); err != nil {
		t.Errorf("acme's connection: %v", err)
	}
}

// testInvalidVPCContained: a VPC whose state is invalid (a bad policy, two
// endpoints on one interface) fails alone. Its endpoints keep what was
// programmed and report why; an endpoint new in it is not attached; every
// other VPC is programmed; fixing it programs it.
func testInvalidVPCContained(t *testing.T, s *suite) {
	tests := []struct {
		name   string
		mutate func(d *datapath.Desired)
	}{
		{"bad policy", func(d *datapath.Desired) {
			d.Endpoints[3].Policy = ingress(fromIDs(nil, 0)) // zeta/a1: identity 0
		}},
		{"two endpoints on one interface", func(d *datapath.Desired) {
			a, b := ep("zeta/x", 200, "a", "10.0.1.20"), ep("zeta/y", 200, "a", "10.0.1.21")
			a.Netns, b.Netns = "/run/netns/weft-conformance-shared", "/run/netns/weft-conformance-shared"
			d.Endpoints = append(d.Endpoints, a, b)
		}},
		{"bad identity", func(d *datapath.Desired) { d.Endpoints[3].Identity = datapath.MaxIdentity + 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := s.full()
			s.set(t, good)
			// acme gets a new endpoint while zeta breaks.
			next := s.full()
			next.Endpoints = append(next.Endpoints, ep("acme/a3", 100, "a", "10.0.1.12"))
			tc.mutate(next)
			new := ep("zeta/new", 200, "a", "10.0.1.30")
			next.Endpoints = append(next.Endpoints, new)
			before := s.counter.Counts()
			err := s.d.Set(ctxT(t, opTimeout), next)
			var ve *datapath.VPCError
			if !errors.As(err, &ve) || ve.VNI != 200 || !errors.Is(err, datapath.ErrInvalid) {
				t.Fatalf("Set = %v; want a VPCError for VNI 200 wrapping ErrInvalid", err)
			}
			someWrites(t, "Set programming acme", s.counter.Counts().Sub(before))
			want := s.full()
			want.Endpoints = append(want.Endpoints, ep("acme/a3", 100, "a", "10.0.1.12"))
			s.check(t, want, nil)
			s.checkGone(t, "zeta/new")
			if st, _ := s.d.Status("zeta/a1"); st.PolicyErr == "" {
				t.Errorf("Status(zeta/a1).PolicyErr empty while its VPC failed")
			}
			if st, _ := s.d.Status("acme/a1"); st.PolicyErr != "" {
				t.Errorf("Status(acme/a1).PolicyErr = %q", st.PolicyErr)
			}
			// Retrying the same state fails the same way and writes nothing.
			before = s.counter.Counts()
			if err := s.d.Set(ctxT(t, opTimeout), next); !errors.As(err, &ve) || ve.VNI != 200 {
				t.Errorf("second Set = %v", err)
			}
			noWrites(t, "retried Set of a failed VPC", s.counter.Counts().Sub(before))
			// Fixed, it programs.
			want.Endpoints = append(want.Endpoints, new)
			s.set(t, want)
			s.check(t, want, nil)
			if st, _ := s.d.Status("zeta/a1"); st.PolicyErr != "" {
				t.Errorf("Status(zeta/a1).PolicyErr = %q after the fix", st.PolicyErr)
			}
		})
	}
}
