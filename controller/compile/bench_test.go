package compile

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
)

// Scale of the benchmark world: 100 tenants with 10 VPCs each.
const (
	benchHosts     = 10_000
	benchVPCs      = 1_000
	benchEndpoints = 100_000
	benchTenants   = 100
)

// benchStore starts a store holding the benchmark world (peers: see
// benchWorld), written directly as objects (with the status the registry
// would have allocated), so that setting up 110,000 objects takes seconds.
func benchStore(b *testing.B, peers bool) *store.Store {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	emb, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { emb.Close() })
	cli, err := emb.Client()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	st, err := store.New(store.Config{Client: cli, MaxBatchOps: 512})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })

	objs := make(chan apiv1.Object, 1024)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(objs)
		for _, o := range benchWorld(peers) {
			select {
			case objs <- o:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var last int64
	revs := make(chan int64, 8)
	for range 8 {
		g.Go(func() error {
			var t store.Txn
			flush := func() error {
				if len(t.Ops) == 0 {
					return nil
				}
				res, err := st.Commit(gctx, t)
				if err != nil {
					return err
				}
				revs <- res.Revision
				t = store.Txn{}
				return nil
			}
			for o := range objs {
				val, err := store.EncodeObject(o)
				if err != nil {
					return err
				}
				t.Ops = append(t.Ops, clientv3.OpPut(st.ObjectKey(apiv1.RefOf(o)), string(val)))
				if len(t.Ops) == 512 {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return flush()
		})
	}
	done := make(chan struct{})
	go func() {
		for r := range revs {
			last = max(last, r)
		}
		close(done)
	}()
	err = g.Wait()
	close(revs)
	<-done
	if err != nil {
		b.Fatal(err)
	}
	if err := st.WaitForRevision(ctx, last); err != nil {
		b.Fatal(err)
	}
	return st
}

// benchWorld returns the objects in creation order. Endpoint i lives on
// host i/10 and in VPC i%1000: every host holds 10 endpoints in 10 VPCs,
// every VPC spans 100 hosts. Each tenant has a QoS class used by a quarter
// of its endpoints, and a policy in its first VPC selecting app=web (half
// its endpoints there) that allows TCP port 80 from anyone. With peers,
// every VPC has instead a policy selecting app=web that allows TCP port 80
// from app=db and egress to app=db (its 50 app=db endpoints): the peers
// are compiled. Endpoints have identities 1 (app=web) and 2 (app=db).
func benchWorld(peers bool) []apiv1.Object {
	var out []apiv1.Object
	for t := range benchTenants {
		tname := fmt.Sprintf("t%03d", t)
		out = append(out, tenant(tname))
		q := qos(tname, "gold", "1Gbit", "2Gbit", 46)
		p := 4
		q.Spec.Priority = &p
		out = append(out, q)
		if !peers {
			out = append(out, policy(tname, fmt.Sprintf("v%04d", t), "web", map[string]string{"app": "web"}))
		}
	}
	for h := range benchHosts {
		hh := host(fmt.Sprintf("h%05d", h), fmt.Sprintf("10.%d.%d.%d", 200+h>>16, h>>8&255, h&255))
		hh.Spec.Capacity = "25Gbit"
		out = append(out, hh)
	}
	for v := range benchVPCs {
		tname := fmt.Sprintf("t%03d", v%benchTenants)
		vp := vpc(tname, fmt.Sprintf("v%04d", v), "10.0.0.0/16")
		vp.Status.VNI = uint32(4096 + v)
		sn := subnet(tname, fmt.Sprintf("v%04d-a", v), vp.Metadata.Name, "10.0.0.0/20")
		sn.Spec.Gateway = "10.0.0.1"
		sn.Status.VNI = vp.Status.VNI
		out = append(out, vp, sn)
		if peers {
			db := &apiv1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
			p := policy(tname, vp.Metadata.Name, "web-"+vp.Metadata.Name, map[string]string{"app": "web"})
			p.Spec.Ingress[0].Peers = []apiv1.PolicyPeer{{Selector: db}}
			p.Spec.Egress = []apiv1.PolicyRule{{Peers: []apiv1.PolicyPeer{{Selector: db}}}}
			out = append(out, p)
		}
	}
	for i := range benchEndpoints {
		v := i % benchVPCs
		tname := fmt.Sprintf("t%03d", v%benchTenants)
		app, id := "web", uint32(1)
		if i%2 == 1 {
			app, id = "db", 2
		}
		n := i / benchVPCs // index inside the VPC
		ep := endpoint(tname, fmt.Sprintf("ep%06d", i), fmt.Sprintf("v%04d-a", v), fmt.Sprintf("h%05d", i/10), "app", app)
		if i%4 == 0 {
			ep.Spec.QoSClass = "gold"
		}
		ep.Status = apiv1.EndpointStatus{IP: fmt.Sprintf("10.0.%d.%d", (n+2)>>8, (n+2)&255),
			MAC: fmt.Sprintf("0a:58:0a:00:%02x:%02x", (n+2)>>8, (n+2)&255), Host: ep.Spec.Host,
			VNI: uint32(4096 + v), Phase: apiv1.PhaseReady, Identity: id}
		out = append(out, ep)
	}
	return out
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkCompile measures, on 10,000 hosts / 100,000 endpoints / 1,000
// VPCs: compiling every view (Start), the heap the views hold, one host's
// recompute+diff, and a snapshot Delta.
func BenchmarkCompile(b *testing.B) { benchCompile(b, false) }

// BenchmarkCompilePeers is BenchmarkCompile with a policy with selector
// peers in every VPC (see benchWorld).
func BenchmarkCompilePeers(b *testing.B) { benchCompile(b, true) }

func benchCompile(b *testing.B, peers bool) {
	st := benchStore(b, peers)
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("start-all-views/workers=%d", workers), func(b *testing.B) {
			benchStart(b, st, workers)
		})
	}
	c, err := New(Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	compileEvery(b, c)
	b.Run("recompute-one-host", func(b *testing.B) {
		i := 0
		ver := makeVersion(c.epoch, uint64(c.Revision()))
		for b.Loop() {
			// The follow goroutine is idle (no events, no sweep within
			// the default linger), so calling finish here is safe.
			h := fmt.Sprintf("h%05d", i%benchHosts)
			start := time.Now()
			next, d := c.build(h)
			c.finish(h, next, d, ver, start)
			i++
		}
	})
	b.Run("delta-snapshot", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := c.Delta(fmt.Sprintf("h%05d", i%benchHosts), 0); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// compileEvery asks for every host's view from 64 goroutines, as agents
// connecting at once do, and returns when all are compiled.
func compileEvery(b *testing.B, c *Compiler) {
	var g errgroup.Group
	g.SetLimit(64)
	for h := range benchHosts {
		g.Go(func() error {
			if c.Version(fmt.Sprintf("h%05d", h)) == 0 {
				return errors.New("compiler closed")
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
}

// benchStart measures compiling every view on first use, with workers
// builds in parallel.
func benchStart(b *testing.B, st *store.Store, workers int) {
	for b.Loop() {
		before := heapInUse()
		c, err := New(Config{Store: st})
		if err != nil {
			b.Fatal(err)
		}
		c.workers = workers
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		compileEvery(b, c)
		b.StopTimer()
		held := heapInUse() - before
		views, res := 0, 0
		c.mu.RLock()
		for _, hv := range c.hosts {
			views++
			n, _ := hv.stats()
			res += n
		}
		c.mu.RUnlock()
		b.ReportMetric(float64(held)/(1<<20), "MiB-held")
		b.ReportMetric(float64(views), "views")
		b.ReportMetric(float64(res), "resources")
		c.Close()
		runtime.KeepAlive(c)
		b.StartTimer()
	}
}
