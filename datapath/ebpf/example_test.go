package ebpf_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/ebpf"
)

// A host with one VPC and one endpoint; misses are answered by the agent
// (here: printed). Needs root.
func ExampleNew() {
	ctx := context.Background()
	d, err := ebpf.New(ctx, ebpf.Config{HostName: "h1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close() // the data plane stays; d.Teardown removes it
	go func() {
		for m := range d.Misses() {
			fmt.Println("where is", m.VNI, m.IP) // the agent would ask and d.Learn
		}
	}()
	err = d.Set(ctx, &datapath.Desired{
		Host: datapath.HostConfig{Name: "h1", UnderlayIP: netip.MustParseAddr("192.0.2.11"), UnderlayDev: "eth0"},
		VPCs: []datapath.VPC{{Tenant: "acme", Name: "main", VNI: 100,
			Subnets: []datapath.Subnet{{Name: "a", CIDR: netip.MustParsePrefix("10.0.1.0/24")}}}},
		Endpoints: []datapath.Endpoint{{ID: "acme/web-1", VNI: 100, Subnet: "a",
			IP: netip.MustParseAddr("10.0.1.10"), MAC: net.HardwareAddr{2, 0, 0, 0, 1, 10}}},
	})
	if err != nil {
		fmt.Println(err)
	}
	st, _ := d.Status("acme/web-1")
	fmt.Println("nsenter --net=" + st.Netns)
}
