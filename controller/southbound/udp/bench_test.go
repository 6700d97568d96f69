package udp

import (
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/controller/liveness"
	"github.com/weftnet/weft/wire"
)

// BenchmarkHandleHeartbeat is the per-datagram cost of the ingest (verify,
// decode, Observe) without the socket.
func BenchmarkHandleHeartbeat(b *testing.B) {
	const hosts = 100_000
	ids := make([]uint32, hosts)
	for i := range ids {
		ids[i] = uint32(i + 1)
	}
	tab, err := liveness.New(liveness.Config{Capacity: hosts + 1})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Addr: "127.0.0.1:0", Keys: newKeyring(ids...), Liveness: tab})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]wire.Key, hosts+1)
	for _, id := range ids {
		keys[id], _ = wire.NewKey(rawKey(id))
	}
	// A first round to make every host known, then enough distinct
	// datagrams for b.N, round robin over the hosts.
	pkts := make([][]byte, hosts+b.N)
	seq := wire.NewSequence(time.Now())
	hb := &wire.Heartbeat{ViewVersion: 1}
	for i := range pkts {
		id := ids[i%hosts]
		pkts[i], _ = wire.Seal(nil, wire.Header{HostID: id, Seq: seq.Next()}, hb, &keys[id])
	}
	r := &reader{}
	from := netip.MustParseAddrPort("127.0.0.1:4000")
	for _, p := range pkts[:hosts] {
		s.handle(r, p, from, 1, 0, 0)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, p := range pkts[hosts:] {
		s.handle(r, p, from, 1, 0, 0)
	}
	b.StopTimer()
	if r.c.heartbeats != uint64(hosts+b.N) {
		b.Fatalf("accepted %d of %d", r.c.heartbeats, b.N)
	}
}

// BenchmarkLocatorLookup is one query against a 100,000-endpoint index.
func BenchmarkLocatorLookup(b *testing.B) {
	src := &fakeSource{}
	src.put(hostObj("h1", "192.0.2.1"))
	for i := 0; i < 100_000; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		src.put(fakeEndpoint("e"+ip.String(), "h1", ip.String(), "02:00:00:00:00:01", 100))
	}
	l, err := NewLocator(LocatorConfig{Store: src})
	if err != nil {
		b.Fatal(err)
	}
	l.resync()
	qs := make([]wire.LookupQuery, 4096)
	for i := range qs {
		qs[i] = wire.LookupQuery{VNI: 100, IP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}
	}
	// The same 1,000 hosts ask about the same 4,096 addresses (their
	// interest is known after the first round).
	for i := 0; i < len(qs)*1000; i++ {
		l.lookup(uint32(i%1000), &qs[i%len(qs)], 1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.lookup(uint32(i%1000), &qs[i%len(qs)], 1)
	}
}

// BenchmarkRecv compares ways to read datagrams from one socket while a
// goroutine blasts 52-byte datagrams at it with sendmmsg: one recvmsg per
// datagram, x/net's ReadBatch (recvmmsg, allocating an address per
// datagram) and this package's recvmmsg. ns/op is per datagram received,
// sender included (both share the CPUs); recv-cpu-ns/datagram is the
// receiving thread's own CPU time per datagram.
func BenchmarkRecv(b *testing.B) {
	for _, mode := range []string{"recvmsg", "x-net-ReadBatch", "recvmmsg"} {
		b.Run(mode, func(b *testing.B) {
			conns, err := listen(b.Context(), "127.0.0.1:0", 1, DefaultRecvBuffer)
			if err != nil {
				b.Fatal(err)
			}
			rc := conns[0]
			defer rc.Close()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc, err := net.DialUDP("udp", nil, rc.LocalAddr().(*net.UDPAddr))
				if err != nil {
					b.Error(err)
					return
				}
				defer sc.Close()
				pc := ipv4.NewPacketConn(sc)
				msgs := make([]ipv4.Message, 64)
				for i := range msgs {
					msgs[i].Buffers = [][]byte{make([]byte, 52)}
				}
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, _ = pc.WriteBatch(msgs, 0)
					runtime.Gosched()
				}
			}()
			var read func() int
			switch mode {
			case "recvmsg", "recvmmsg":
				batch := 1
				if mode == "recvmmsg" {
					batch = 64
				}
				pio, err := newPacketIO(rc, batch)
				if err != nil {
					b.Fatal(err)
				}
				read = func() int { n, _ := pio.recv(); return n }
			default:
				pc := ipv4.NewPacketConn(rc)
				msgs := make([]ipv4.Message, 64)
				for i := range msgs {
					msgs[i].Buffers = [][]byte{make([]byte, recvBufSize)}
				}
				read = func() int { n, _ := pc.ReadBatch(msgs, 0); return n }
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := threadCPU()
			for got := 0; got < b.N; {
				got += read()
			}
			cpu := threadCPU() - cpu0
			b.StopTimer()
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "recv-cpu-ns/datagram")
			close(stop)
			wg.Wait()
		})
	}
}

// threadCPU returns the calling thread's CPU time.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
