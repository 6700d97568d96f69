package linux_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// BenchmarkAttachSuccessive attaches 200 endpoints to one VPC, one Set
// each, every Set holding one endpoint more: what an agent does when
// containers start one after the other. Reported per attach; the modes:
// the driver's defaults, with a pool of 4 namespaces made ahead
// (Config.NetnsPool), and reading every namespace on every Set.
func BenchmarkAttachSuccessive(b *testing.B) {
	for _, mode := range []string{"default", "netns-pool", "read-every-set"} {
		b.Run(mode, func(b *testing.B) {
			tn := nettest.New(b, testnet.Options{})
			h := tn.Host(0)
			d := startDriver(b, tn, h, func(c *linux.Config) {
				switch mode {
				case "netns-pool":
					c.NetnsPool = 4
				case "read-every-set":
					c.EndpointResync, c.VPCResync = -1, -1
				}
			})
			st := &datapath.Desired{Host: hostConfig(h), VPCs: twoTenants()[:1]}
			const n = 200
			var took time.Duration
			for b.Loop() {
				st.Endpoints = nil
				if err := d.Set(b.Context(), st); err != nil {
					b.Fatal(err)
				}
				for i := range n {
					ip := netip.AddrFrom4([4]byte{10, 0, 1, byte(10 + i)})
					st.Endpoints = append(st.Endpoints, datapath.Endpoint{ID: fmt.Sprintf("t/e%d", i), VNI: 100, Subnet: "a", IP: ip, MAC: epMAC(100, ip)})
					t0 := time.Now()
					if err := d.Set(b.Context(), st); err != nil {
						b.Fatal(err)
					}
					took += time.Since(t0)
				}
			}
			b.ReportMetric(float64(n*b.N)/took.Seconds(), "attaches/s")
		})
	}
}
