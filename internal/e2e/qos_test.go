package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/testnet"
)

// qosDoc: acme's endpoint capped (class cap100: 100 Mbit/s each way) on
// h1, with a peer on h2 and a neighbour on h1 without QoS.
const qosDoc = `apiVersion: weft/v1
kind: Host
metadata: {name: h1}
spec: {underlayIP: 192.0.2.11, capacity: 10Gbit}
---
apiVersion: weft/v1
kind: Host
metadata: {name: h2}
spec: {underlayIP: 192.0.2.12, capacity: 10Gbit}
---
apiVersion: weft/v1
kind: Host
metadata: {name: h3}
spec: {underlayIP: 192.0.2.13}
---
apiVersion: weft/v1
kind: Tenant
metadata: {name: acme}
---
apiVersion: weft/v1
kind: VPC
metadata: {name: main, tenant: acme}
spec: {cidrs: [10.0.0.0/16]}
---
apiVersion: weft/v1
kind: Subnet
metadata: {name: a, tenant: acme}
spec: {vpc: main, cidr: 10.0.1.0/24}
---
apiVersion: weft/v1
kind: QoSClass
metadata: {name: cap100, tenant: acme}
spec: {maxRate: 100Mbit, priority: 2, dscp: 34}
---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: capped, tenant: acme}
spec: {subnet: a, host: h1, qosClass: cap100}
---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: peer, tenant: acme}
spec: {subnet: a, host: h2}
---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: neighbour, tenant: acme}
spec: {subnet: a, host: h1}
`

// TestQoS: through the controller and the agents, an endpoint of a class
// capped at 100 Mbit/s gets 100 Mbit/s ±10% of TCP payload in each
// direction, to another host and on its own (the cap holds the Ethernet
// frames: 1398 payload bytes of 1464 make the payload's ceiling 95.5), and
// its QoSProgrammed condition is True.
func TestQoS(t *testing.T) { forEachDatapath(t, testQoS) }

func testQoS(t *testing.T, datapath string) {
	e := &policyEnv{dpEnv: newDPEnv(t, []byte(qosDoc), datapath)}
	e.eps = e.waitReady(3, 90*time.Second)
	e.waitProgrammed(t, 3)
	capped, peer, neighbour := e.eps["acme/capped"], e.eps["acme/peer"], e.eps["acme/neighbour"]
	const capMbps = 100
	for _, c := range []struct {
		name     string
		from, to *apiv1.Endpoint
	}{
		{"egress to another host", capped, peer},
		{"ingress from another host", peer, capped},
		{"egress on its host", capped, neighbour},
		{"ingress on its host", neighbour, capped},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := testnet.Stream(ctx, testnet.StreamOptions{From: c.from.Status.Netns, To: c.to.Status.Netns,
				Addr:   netip.AddrPortFrom(netip.MustParseAddr(c.to.Status.IP), 5201),
				Warmup: 500 * time.Millisecond, Duration: 3 * time.Second, SenderCPU: -1, ReceiverCPU: -1})
			if err != nil {
				t.Fatal(err)
			}
			mbps := res.Gbps() * 1000
			t.Logf("%s -> %s: %.1f Mbit/s of TCP payload (cap %d Mbit/s of frames), %d retransmits",
				epID(c.from), epID(c.to), mbps, capMbps, res.Retransmits)
			if mbps < 0.9*capMbps || mbps > 1.1*capMbps {
				t.Errorf("%.1f Mbit/s, want %d ±10%%", mbps, capMbps)
			}
		})
	}
	// The uncapped pair of the same hosts is not held to the cap.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := testnet.Stream(ctx, testnet.StreamOptions{From: neighbour.Status.Netns, To: peer.Status.Netns,
		Addr: netip.AddrPortFrom(netip.MustParseAddr(peer.Status.IP), 5202), Duration: time.Second, SenderCPU: -1, ReceiverCPU: -1})
	if err != nil {
		t.Fatal(err)
	}
	if mbps := res.Gbps() * 1000; mbps < 2*capMbps {
		t.Errorf("uncapped neighbour -> peer: %.1f Mbit/s, want well above the %d Mbit/s cap of its neighbour", mbps, capMbps)
	} else {
		t.Logf("uncapped neighbour -> peer: %.1f Mbit/s", mbps)
	}
}
