package udpmux

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/wire"
)

// TestShared: two agents share one mux. Each heartbeats with its own host
// ID and key from the mux's address; datagrams are handed to the agent
// whose host ID they carry, authenticated with its key; a closed agent
// neither heartbeats nor gets datagrams.
func TestShared(t *testing.T) {
	const idA, idB = 7, 8
	ids := map[string]uint32{"h1": idA, "h2": idB}
	w := newWelcomer(t, ids)
	ctrl := newControllerUDP(t, w)
	mux := newMux(t)
	muxAddr := netip.MustParseAddrPort(mux.LocalAddr().String())

	a := startAgent(t, mux, w, "h1", ctrl.addr(), 5*time.Millisecond)
	b := startAgent(t, mux, w, "h2", ctrl.addr(), 5*time.Millisecond)
	waitFor(t, "the host IDs", func() bool { return a.HostID() == idA && b.HostID() == idB })
	if a.LocalUDPAddr().String() != mux.LocalAddr().String() {
		t.Errorf("agent's UDP address %s, want the mux's %s", a.LocalUDPAddr(), mux.LocalAddr())
	}

	// Heartbeats of both, each with its own ID, from the mux's socket.
	seen := map[uint32]bool{}
	waitFor(t, "heartbeats of both hosts", func() bool {
		d := ctrl.next(t)
		if d.from.Port() != muxAddr.Port() {
			t.Fatalf("heartbeat of host %d from %s, want the mux's port %d", d.hdr.HostID, d.from, muxAddr.Port())
		}
		seen[d.hdr.HostID] = true
		return seen[idA] && seen[idB]
	})

	// Datagrams reach the host they name, checked with its session's key.
	ctrl.sealTo(t, muxAddr, idB, &wire.HeartbeatAck{}, w.key(t, idB))
	waitFor(t, "B's ack", func() bool { return b.Stats().HeartbeatAcks == 1 })
	ctrl.sealTo(t, muxAddr, idA, &wire.HeartbeatAck{}, w.key(t, idB)) // A's ID, B's key
	waitFor(t, "the forged datagram to be rejected", func() bool { return a.Stats().DatagramsRejected == 1 })
	ctrl.sealTo(t, muxAddr, idB, &wire.HeartbeatAck{}, hostKey("h2")) // B's host key: not a datagram key
	waitFor(t, "the datagram sealed with the host key to be rejected", func() bool { return b.Stats().DatagramsRejected == 1 })
	ctrl.sealTo(t, muxAddr, 99, &wire.HeartbeatAck{}, w.key(t, idA)) // nobody's
	waitFor(t, "the datagram for no member to be rejected", func() bool { return mux.Rejected() == 1 })
	if sa, sb := a.Stats(), b.Stats(); sa.HeartbeatAcks != 0 || sb.DatagramsRejected != 1 {
		t.Errorf("A: %d acks, B: %d rejected; want 0 and 1", sa.HeartbeatAcks, sb.DatagramsRejected)
	}

	// A leaves: B keeps beating, A is silent and unknown.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for len(ctrl.heartbeats) > 0 {
		<-ctrl.heartbeats
	}
	sentB := b.Stats().HeartbeatsSent
	deadline := time.Now().Add(50 * time.Millisecond) // ten periods
	for time.Now().Before(deadline) {
		select {
		case d := <-ctrl.heartbeats:
			if d.hdr.HostID == idA {
				t.Fatal("a heartbeat of the closed agent")
			}
		case <-time.After(time.Until(deadline)):
		}
	}
	waitFor(t, "B's next heartbeat", func() bool { return b.Stats().HeartbeatsSent > sentB })
	ctrl.sealTo(t, muxAddr, idA, &wire.HeartbeatAck{}, w.key(t, idA))
	waitFor(t, "the datagram for the closed agent to be rejected", func() bool { return mux.Rejected() == 2 })
}

// TestLifecycle: Start once, Close idempotent, also without Start.
func TestLifecycle(t *testing.T) {
	m, err := New(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); !errors.Is(err, lifecycle.ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	for range 2 {
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Start(t.Context()); !errors.Is(err, lifecycle.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	never, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := never.Close(); err != nil {
		t.Errorf("Close without Start: %v", err)
	}
}

// sender is a member that only counts the heartbeats sent for it.
type sender struct{ sent atomic.Int32 }

func (*sender) HostID() uint32                   { return 1 }
func (*sender) DatagramKey() []byte              { return nil }
func (*sender) HeartbeatInterval() time.Duration { return time.Hour }
func (*sender) AppendHeartbeat(buf []byte, _ *wire.Heartbeat) ([]byte, netip.AddrPort, bool) {
	return buf, netip.AddrPort{}, false
}
func (s *sender) HeartbeatSent()                                           { s.sent.Add(1) }
func (*sender) HandleDatagram(wire.Header, []byte, *agent.DatagramScratch) {}
func (*sender) RejectDatagram(error)                                       {}

// TestGSO: a batch of heartbeats to two addresses, of two sizes,
// reaches each address as the very datagrams it would without
// segmentation offload, each counted once on its sender; and a kernel that
// refuses the offload (a socket without UDP checksums refuses it with
// EINVAL) turns it off, the datagrams leaving one by one instead.
func TestGSO(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "segmented", true: "refused"}[refuse], func(t *testing.T) {
			mux := newMux(t)
			if !mux.gso {
				t.Skip("the kernel has no UDP segmentation offload")
			}
			if refuse {
				rc, err := mux.conn.SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				var serr error
				if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) }); err != nil || serr != nil {
					t.Fatal(err, serr)
				}
			}
			var sinks [2]*net.UDPConn
			for i := range sinks {
				var err error
				if sinks[i], err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
					t.Fatal(err)
				}
				defer sinks[i].Close()
			}
			// Sink 0 gets one datagram (alone in its group), sink 1 six of
			// 52 bytes and one of 60; every datagram names its sender.
			b := newHBBatch(8, true)
			senders := make([]*sender, 8)
			want := [2][]string{}
			for i := range senders {
				senders[i] = &sender{}
				sink, size := 1, 52
				switch i {
				case 0:
					sink = 0
				case 7:
					size = 60
				}
				pkt := make([]byte, size)
				pkt[0] = byte(i)
				b.pkts = append(b.pkts, pkt)
				b.to = append(b.to, netip.MustParseAddrPort(sinks[sink].LocalAddr().String()))
				b.senders = append(b.senders, senders[i])
				want[sink] = append(want[sink], fmt.Sprintf("%d:%d", i, size))
			}
			mux.write(b)

			for s, sink := range sinks {
				var got []string
				buf := make([]byte, 2000)
				for len(got) < len(want[s]) {
					if err := sink.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
						t.Fatal(err)
					}
					n, err := sink.Read(buf)
					if err != nil {
						t.Fatalf("sink %d: %v after %q", s, err, got)
					}
					got = append(got, fmt.Sprintf("%d:%d", buf[0], n))
				}
				slices.Sort(got)
				if diff := cmp.Diff(want[s], got); diff != "" {
					t.Errorf("datagrams at sink %d (-want +got):\n%s", s, diff)
				}
			}
			for i, s := range senders {
				if n := s.sent.Load(); n != 1 {
					t.Errorf("sender %d: %d heartbeats counted, want 1", i, n)
				}
			}
			if mux.gso == refuse {
				t.Errorf("GSO on after the batch: %v, want %v", mux.gso, !refuse)
			}
		})
	}
}

// BenchmarkHeartbeats runs a mux of 4096 agents (sim's AgentsPerSocket)
// heartbeating every 100 ms to a socket that nobody reads, and reports the
// process CPU time per heartbeat (cpu-ns/hb): scheduling, building,
// sealing and sending. One op is one heartbeat; ns/op is wall time and
// only says that the mux keeps up.
func BenchmarkHeartbeats(b *testing.B) {
	const members, interval = 4096, 100 * time.Millisecond
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	_ = sink.SetReadBuffer(1 << 16) // full at once: the kernel drops the rest
	ids := map[string]uint32{}
	for i := range members {
		ids[fmt.Sprintf("h%d", i)] = uint32(i + 1)
	}
	w := newWelcomer(b, ids)
	mux := newMux(b)
	agents := make([]*agent.Agent, 0, members)
	for h := range ids {
		agents = append(agents, startAgent(b, mux, w, h, sink.LocalAddr().String(), interval))
	}
	waitFor(b, "every agent's host ID", func() bool {
		for _, a := range agents {
			if a.HostID() == 0 {
				return false
			}
		}
		return true
	})
	sent := func() (n uint64) {
		for _, a := range agents {
			n += a.Stats().HeartbeatsSent
		}
		return n
	}
	time.Sleep(2 * interval) // every member past its first, random, phase

	b.ReportAllocs()
	b.ResetTimer()
	cpu0, n0 := cpuTime(b), sent()
	// Counting costs a Stats snapshot per agent: sleep through most of
	// the heartbeats first.
	time.Sleep(time.Duration(b.N) * interval / members)
	for sent()-n0 < uint64(b.N) {
		time.Sleep(interval / 10)
	}
	cpu, n := cpuTime(b)-cpu0, sent()-n0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/hb")
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
