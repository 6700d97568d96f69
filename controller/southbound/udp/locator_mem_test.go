package udp

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/internal/scaleobjects"
)

// BenchmarkLocatorMemory measures the live heap the Locator's own index
// keeps per endpoint (the store's objects are not counted: they belong to
// the source), for N endpoints (WEFT_MEM_ENDPOINTS, default 100,000) on
// N/10 hosts in N/100 VNIs:
//
//	go test -run XXX -bench LocatorMemory -benchtime 1x ./controller/southbound/udp/
func BenchmarkLocatorMemory(b *testing.B) {
	n := scaleobjects.Endpoints(b, 100_000)
	hosts, vnis := n/10, n/100
	src := &fakeSource{}
	for i := range hosts {
		src.put(hostObj("h"+strconv.Itoa(i), fmt.Sprintf("100.%d.%d.%d", 64+(i>>16)&63, byte(i>>8), byte(i))))
	}
	for e := range n {
		h, k := e%hosts, (e+e/hosts)%vnis
		j := e / vnis
		ep := endpointObj("e"+strconv.Itoa(e), "s"+strconv.Itoa(k), "h"+strconv.Itoa(h))
		ep.Metadata.Tenant = "t" + strconv.Itoa(k/100)
		ep.Status = apiv1.EndpointStatus{IP: fmt.Sprintf("10.%d.%d.%d", k%100, byte(j>>8), byte(j)),
			MAC:  fmt.Sprintf("02:00:0a:%02x:%02x:%02x", k%100, byte(j>>8), byte(j)),
			Host: ep.Spec.Host, VNI: uint32(1000 + k), Phase: apiv1.PhaseReady}
		src.put(ep)
	}
	b.ResetTimer()
	for range b.N {
		base := heapAfterGC()
		l, err := NewLocator(LocatorConfig{Store: src})
		if err != nil {
			b.Fatal(err)
		}
		l.resync()
		held := heapAfterGC()
		if got := l.Len(); got != n {
			b.Fatalf("locator indexes %d endpoints, want %d", got, n)
		}
		b.ReportMetric(float64(held-base)/float64(n), "B/endpoint")
		runtime.KeepAlive(l)
	}
}

func heapAfterGC() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
