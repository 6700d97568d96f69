package udp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/scaleobjects"
)

// replicaEtcdEnv makes TestReplicaMemoryChild act as a controller replica
// without embedded etcd: a store and a locator on the etcd at this URL.
const replicaEtcdEnv = "WEFT_REPLICA_MEM_ETCD"

// BenchmarkReplicaRSS measures the resident memory of a child process
// holding what every replica holds for N endpoints (WEFT_MEM_ENDPOINTS,
// default 100,000): the store's cache and the locator, loaded from an etcd
// in this process, under several GOGC / GOMEMLIMIT settings
// (WEFT_MEM_GC: a comma-separated list of "GOGC/GOMEMLIMIT" pairs):
//
//	go test -run XXX -bench ReplicaRSS -benchtime 1x ./controller/southbound/udp/
//
// peak-RSS-B/endpoint is the high-water mark (the cold start's list),
// RSS-B/endpoint the resident set once loaded and after a forced GC,
// RSS-after-FreeOSMemory-B/endpoint the same once debug.FreeOSMemory
// returned the cold start's garbage, live-B/endpoint the live heap.
func BenchmarkReplicaRSS(b *testing.B) {
	n := scaleobjects.Endpoints(b, 100_000)
	settings := "100/off,50/off,200/off,100/150MiB,100/200MiB,off/200MiB"
	if v := os.Getenv("WEFT_MEM_GC"); v != "" {
		settings = v
	}
	ctx := context.Background()
	emb, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: filepath.Join(b.TempDir(), "etcd")})
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Close()
	cli, err := emb.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	replicaLoad(b, cli, n)
	for _, set := range strings.Split(settings, ",") {
		gogc, limit, _ := strings.Cut(set, "/")
		b.Run("GOGC="+gogc+"/GOMEMLIMIT="+limit, func(b *testing.B) {
			for range b.N {
				cmd := exec.Command(os.Args[0], "-test.run=^TestReplicaMemoryChild$")
				cmd.Env = append(os.Environ(), replicaEtcdEnv+"="+emb.Endpoints()[0], "GOGC="+gogc, "GOMEMLIMIT="+limit)
				var out, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &stderr
				if err := cmd.Run(); err != nil {
					b.Fatalf("replica: %v\n%s%s", err, out.Bytes(), stderr.Bytes())
				}
				got := map[string]float64{}
				sc := bufio.NewScanner(&out)
				for sc.Scan() {
					if k, v, ok := strings.Cut(sc.Text(), "="); ok {
						if f, err := strconv.ParseFloat(v, 64); err == nil {
							got[k] = f
						}
					}
				}
				if got["endpoints"] != float64(n) {
					b.Fatalf("replica indexed %v endpoints, want %d:\n%s%s", got["endpoints"], n, out.Bytes(), stderr.Bytes())
				}
				for _, m := range []string{"peak-RSS", "RSS", "RSS-after-FreeOSMemory", "live"} {
					b.ReportMetric(got[m]/float64(n), m+"-B/endpoint")
				}
				b.ReportMetric(got["load-s"], "load-s")
			}
		})
	}
}

// TestReplicaMemoryChild is BenchmarkReplicaRSS's replica; it does nothing
// unless started by it.
func TestReplicaMemoryChild(t *testing.T) {
	url := os.Getenv(replicaEtcdEnv)
	if url == "" {
		t.Skip("run by BenchmarkReplicaRSS")
	}
	ctx := context.Background()
	start := time.Now()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(store.Config{Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := NewLocator(LocatorConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
	load := time.Since(start)
	peak := procStatus(t, "VmHWM")
	live := heapAfterGC()
	time.Sleep(time.Second) // let the background scavenger return freed pages
	rss := procStatus(t, "VmRSS")
	debug.FreeOSMemory()
	fmt.Printf("endpoints=%d\nload-s=%.2f\npeak-RSS=%d\nRSS=%d\nRSS-after-FreeOSMemory=%d\nlive=%d\n",
		l.Len(), load.Seconds(), peak, rss, procStatus(t, "VmRSS"), live)
	runtime.KeepAlive(l)
	os.Exit(0) // no cleanup or leak check: the parent only reads the figures
}

// procStatus returns a /proc/self/status size in bytes.
func procStatus(t *testing.T, field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// replicaLoad writes the sim's shape for n endpoints: n/10 hosts, n/100
// VPCs with a subnet each (100 per tenant), endpoints with 2 labels and a
// status address.
func replicaLoad(b *testing.B, cli *clientv3.Client, n int) {
	b.Helper()
	keys, err := store.New(store.Config{Client: cli})
	if err != nil {
		b.Fatal(err)
	}
	objs := scaleobjects.Objects(n, false)
	const perTxn, writers = 128, 4
	var wg sync.WaitGroup
	next := make(chan []apiv1.Object)
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for chunk := range next {
				ops := make([]clientv3.Op, 0, len(chunk))
				for _, o := range chunk {
					v, err := store.EncodeObject(o)
					if err != nil {
						errs <- err
						return
					}
					ops = append(ops, clientv3.OpPut(keys.ObjectKey(apiv1.RefOf(o)), string(v)))
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
