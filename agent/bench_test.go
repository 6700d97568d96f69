package agent

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/agent/state"
	"github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// benchView describes the snapshot of one simulated host.
type benchView struct {
	name   string
	vpcs   int  // VPCs the endpoints are spread over
	labels bool // endpoints carry a UID and two labels (internal/scaleobjects)
	// policies: every endpoint has an app label and an identity, and one
	// policy of its VPC applies to it, with the rules of `weft bench
	// coldstart --policies` (sim/load.go) over 10 apps of 10 endpoints.
	policies bool
}

// benchViews are the shapes of the benchmarks: 10 endpoints over 3 VPCs
// with labels, and the shape of `weft bench coldstart` (sim/layout.go: 10
// endpoints of one host are in 10 VPCs, no labels).
var benchViews = []benchView{{"3vpcs-labels", 3, true, false}, {"coldstart", 10, false, false},
	{"coldstart-policies", 10, false, true}}

// snapshot returns the snapshot the controller sends host h1 of shape bv,
// encoded as the controller encodes it (view.Encode).
func (bv benchView) snapshot(tb testing.TB) *wire.Delta {
	res := []wire.Resource{mustRes(tb, &view.Host{Name: testHost, HostID: testHostID, UnderlayIP: "100.64.0.1"})}
	for k := range bv.vpcs {
		cidr := fmt.Sprintf("10.%d.0.0/16", k)
		res = append(res, mustRes(tb, &view.VPC{Tenant: "t0", Name: fmt.Sprintf("v%d", k), VNI: uint32(1000 + k),
			CIDRs: []string{cidr}, Subnets: []view.Subnet{{Name: fmt.Sprintf("s%d", k), CIDR: cidr, Gateway: fmt.Sprintf("10.%d.0.1", k)}}}))
	}
	tiers := []string{"frontend", "backend", "db"}
	for e := range 10 {
		k := e % bv.vpcs
		j := 50000 + e*7
		ep := &view.Endpoint{Tenant: "t0", Name: fmt.Sprintf("e%d", 50000*e+1), VPC: fmt.Sprintf("v%d", k),
			VNI: uint32(1000 + k), Subnet: fmt.Sprintf("s%d", k), CIDR: fmt.Sprintf("10.%d.0.0/16", k),
			Gateway: fmt.Sprintf("10.%d.0.1", k), IP: fmt.Sprintf("10.%d.%d.%d", k, byte(j>>8), byte(j)),
			MAC: fmt.Sprintf("02:00:0a:%02x:%02x:%02x", k, byte(j>>8), byte(j))}
		if bv.labels {
			ep.UID = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", e*2654435761&0xffffffff, e, e, e, e*0x9e3779b9)
			ep.Labels = map[string]string{"app": fmt.Sprintf("app-%d", e%50), "tier": tiers[e%3]}
		}
		if bv.policies {
			ep.Labels, ep.Identity = map[string]string{"app": fmt.Sprintf("a%d", e)}, uint32(e+1)
			res = append(res, mustRes(tb, benchPolicy(ep, k)))
		}
		res = append(res, mustRes(tb, ep))
	}
	// Sorted by key, as the controller sends them.
	slices.SortFunc(res, func(a, b wire.Resource) int {
		return cmp.Or(cmp.Compare(a.Key.Type, b.Key.Type), cmp.Compare(a.Key.ID, b.Key.ID))
	})
	return &wire.Delta{ToVersion: 1, Snapshot: true, Upserts: res}
}

// benchPolicy is the policy of ep's app in VPC k: TCP 8080 from the next
// app and ICMP from the VPC's 10 apps in, TCP 5432 and UDP 53 to the 10
// endpoints of the app after out.
func benchPolicy(ep *view.Endpoint, k int) *view.Policy {
	id := view.ID(ep.Tenant, "sp"+ep.Name)
	port := func(proto uint8, n uint16) view.Port {
		return view.Port{Protocol: proto, First: n, Last: n, ICMPType: -1, ICMPCode: -1}
	}
	var prefixes []string
	for i := range 10 {
		prefixes = append(prefixes, fmt.Sprintf("10.%d.%d.%d/32", k, 1+i, 2+ep.Identity%10))
	}
	return &view.Policy{Tenant: ep.Tenant, Name: "sp" + ep.Name, VPC: ep.VPC, IngressIsolated: true, EgressIsolated: true,
		Ingress: []view.Rule{
			{Name: id + " ingress[0]", Identities: []uint32{ep.Identity%10 + 1}, Ports: []view.Port{port(6, 8080)}},
			{Name: id + " ingress[1]", Identities: []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
				Ports: []view.Port{{Protocol: 1, ICMPType: -1, ICMPCode: -1}}},
		},
		Egress:  []view.Rule{{Name: id + " egress[0]", Prefixes: prefixes, Ports: []view.Port{port(6, 5432), port(17, 53)}}},
		Applies: []string{view.ID(ep.Tenant, ep.Name)}}
}

func benchConfig() *Config {
	return &Config{Host: testHost, UnderlayIP: netip.MustParseAddr("100.64.0.1")}
}

// BenchmarkTranslate is the translation of a host's view into the
// datapath's desired state (decoding every resource and normalizing).
func BenchmarkTranslate(b *testing.B) {
	for _, bv := range benchViews {
		b.Run(bv.name, func(b *testing.B) {
			v, err := state.New(testHost).Apply(bv.snapshot(b))
			if err != nil {
				b.Fatal(err)
			}
			cfg := benchConfig()
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				if _, err := translate(v, cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// With a PolicyCache that holds the view's policies (another agent
	// of the process translated them, or this one before the change).
	bv := benchViews[len(benchViews)-1]
	b.Run(bv.name+"-cached", func(b *testing.B) {
		v, err := state.New(testHost).Apply(bv.snapshot(b))
		if err != nil {
			b.Fatal(err)
		}
		cfg := benchConfig()
		cfg.PolicyCache = NewPolicyCache(0)
		if _, err := translate(v, cfg); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			if _, err := translate(v, cfg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkApplySnapshot is what an agent does with its first snapshot
// once the frame is decoded: build the view, translate it, program the sim
// driver (as `weft sim` configures it).
func BenchmarkApplySnapshot(b *testing.B) {
	for _, bv := range benchViews {
		b.Run(bv.name, func(b *testing.B) {
			delta := bv.snapshot(b)
			cfg := benchConfig()
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				v, err := state.New(testHost).Apply(delta)
				if err != nil {
					b.Fatal(err)
				}
				d, err := translate(v, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if err := sim.New(sim.Config{Normalized: true}).Set(b.Context(), d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// reportCPU starts measuring the process CPU time; the function it returns
// reports it per op (cpu-ns/op), which unlike ns/op does not count the
// time other processes of a shared machine hold the CPU. It includes the
// garbage collector's work.
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	return func() { b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op") }
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
