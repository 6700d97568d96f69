package store

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// memEndpointsEnv sets the number of endpoints of BenchmarkCacheMemory
// (default 100,000; keep it ≤ 200,000 on shared machines).
const memEndpointsEnv = "WEFT_MEM_ENDPOINTS"

// BenchmarkCacheMemory measures the live heap a Store's cache keeps per
// endpoint, in the sim's shape scaled to N endpoints: N/10 hosts, N/100
// VPCs with one subnet each, 100 VPCs per tenant, and endpoints as the
// controller leaves them (uid, timestamps, 2 labels, status
// IP/MAC/host/VNI/phase). Run it once per size:
//
//	WEFT_MEM_ENDPOINTS=100000 go test -run XXX -bench CacheMemory -benchtime 1x ./controller/store/
//
// "list" is a cold start: the Store lists state that is already in etcd.
// "watch" is a Store that saw every object created and then updated
// through its watch, so that its event ring is full too. The retained heap
// is the difference made by closing the Store (after forced GCs), so the
// embedded etcd's own heap is not counted; B/endpoint counts everything
// the Store keeps (hosts and subnets included), divided by N.
func BenchmarkCacheMemory(b *testing.B) {
	n := 100_000
	if v := os.Getenv(memEndpointsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			b.Fatalf("%s=%q: want a number ≥ 100", memEndpointsEnv, v)
		}
	}
	for _, mode := range []string{"list", "watch"} {
		b.Run(fmt.Sprintf("mode=%s/endpoints=%d", mode, n), func(b *testing.B) {
			e := newEnv(b, envOpts{})
			e.s.Close() // only the measured Store holds a cache
			for range b.N {
				var s *Store
				var objs []apiv1.Object
				if mode == "list" {
					objs = memLoad(b, e.cli, n, false)
				}
				base := heapAfterGC()
				s = memStore(b, e)
				if mode == "watch" {
					objs = memLoad(b, e.cli, n, true)
					waitForObjects(b, s, len(objs))
				}
				objs = nil
				held := heapAfterGC()
				if p := os.Getenv("WEFT_MEM_PROFILE"); p != "" {
					writeHeapProfile(b, p+"."+mode)
				}
				objects := s.cache.len()
				s.Close()
				s.cli.Close()
				s = nil
				freed := held - heapAfterGC()
				b.ReportMetric(float64(freed)/float64(n), "B/endpoint")
				b.ReportMetric(float64(held-base)/float64(n), "B/endpoint-grown")
				b.ReportMetric(float64(objects), "objects")
				runtime.KeepAlive(objs)
			}
		})
	}
}

// writeHeapProfile writes the live heap to path (inuse_space shows what
// the Store holds).
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

func heapAfterGC() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// memStore starts a Store on a client of its own, as a replica has.
func memStore(b *testing.B, e *env) *Store {
	b.Helper()
	cli, err := e.e.Client()
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Client: cli, Logger: testLogger()})
	if err != nil {
		cli.Close()
		b.Fatal(err)
	}
	if err := s.Start(testCtx(b)); err != nil {
		cli.Close()
		b.Fatal(err)
	}
	return s
}

func waitForObjects(b *testing.B, s *Store, n int) {
	b.Helper()
	rev, err := s.cli.Get(testCtx(b), "/", clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	waitRev(b, s, rev.Header.Revision)
	if got := s.cache.len(); got < n {
		b.Fatalf("store has %d objects, want %d", got, n)
	}
}

// memObjects returns the sim-shaped objects for n endpoints: tenants,
// VPCs, subnets, hosts, then endpoints. pending endpoints have no status
// address yet (as created, before the controller and agent fill it).
func memObjects(n int, pending bool) []apiv1.Object {
	hosts, vpcs := max(n/10, 1), max(n/100, 1)
	tm := func(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }
	meta := func(tenant, name string, i int) apiv1.ObjectMeta {
		return apiv1.ObjectMeta{Name: name, Tenant: tenant, Generation: 1,
			UID:               fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i*2654435761&0xffffffff, i&0xffff, i&0xfff, (i>>12)&0xfff, uint64(i)*0x9e3779b97f4a7c15&0xffffffffffff),
			CreationTimestamp: "2025-06-01T12:00:00Z"}
	}
	tenantOf := func(k int) string { return "t" + strconv.Itoa(k/100) }
	var objs []apiv1.Object
	for t := range (vpcs + 99) / 100 {
		objs = append(objs, &apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: meta("", "t"+strconv.Itoa(t), t)})
	}
	for k := range vpcs {
		cidr := fmt.Sprintf("10.%d.0.0/16", k%100)
		vpc := &apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: meta(tenantOf(k), "v"+strconv.Itoa(k), k), Spec: apiv1.VPCSpec{CIDRs: []string{cidr}}}
		vpc.Status.VNI = uint32(1000 + k)
		sn := &apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: meta(tenantOf(k), "s"+strconv.Itoa(k), k),
			Spec: apiv1.SubnetSpec{VPC: vpc.Metadata.Name, CIDR: cidr}}
		sn.Status.VNI = uint32(1000 + k)
		objs = append(objs, vpc, sn)
	}
	for i := range hosts {
		objs = append(objs, &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: meta("", "h"+strconv.Itoa(i), i),
			Spec: apiv1.HostSpec{UnderlayIP: fmt.Sprintf("100.%d.%d.%d", 64+(i>>16)&63, byte(i>>8), byte(i))}})
	}
	tiers := []string{"frontend", "backend", "db"}
	for e := range n {
		h, k := e%hosts, (e+e/hosts)%vpcs
		ep := &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: meta(tenantOf(k), "e"+strconv.Itoa(e), e),
			Spec: apiv1.EndpointSpec{Subnet: "s" + strconv.Itoa(k), Host: "h" + strconv.Itoa(h)}}
		ep.Metadata.Labels = map[string]string{"app": "app-" + strconv.Itoa(e%50), "tier": tiers[e%3]}
		ep.Status.Host = ep.Spec.Host
		ep.Status.Phase = apiv1.PhasePending
		if !pending {
			j := e / vpcs // index inside the VPC
			ep.Status.IP = fmt.Sprintf("10.%d.%d.%d", k%100, byte(j>>8), byte(j))
			ep.Status.MAC = fmt.Sprintf("02:00:0a:%02x:%02x:%02x", k%100, byte(j>>8), byte(j))
			ep.Status.VNI = uint32(1000 + k)
			ep.Status.Phase = apiv1.PhaseReady
		}
		objs = append(objs, ep)
	}
	return objs
}

// memLoad writes the objects of memObjects(n) with raw etcd txns; twice
// (pending, then ready) if update is set. It returns the objects.
func memLoad(b *testing.B, cli *clientv3.Client, n int, update bool) []apiv1.Object {
	b.Helper()
	s := &Store{prefix: DefaultPrefix, kinds: newKindTable()}
	write := func(objs []apiv1.Object) {
		const perTxn, writers = 128, 4
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		next := make(chan []apiv1.Object)
		for range writers {
			wg.Go(func() {
				for chunk := range next {
					ops := make([]clientv3.Op, 0, len(chunk))
					for _, o := range chunk {
						ops = append(ops, clientv3.OpPut(s.ObjectKey(apiv1.RefOf(o)), mustEncode(o)))
					}
					if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		for i := 0; i < len(objs); i += perTxn {
			next <- objs[i:min(i+perTxn, len(objs))]
		}
		close(next)
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	if update {
		write(memObjects(n, true))
	}
	objs := memObjects(n, false)
	write(objs)
	return objs
}

// len returns the number of cached objects.
func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, kc := range c.byKind {
		n += kc.items.len()
	}
	return n
}
