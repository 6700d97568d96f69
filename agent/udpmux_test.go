package agent

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/agent/backoff"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/wire"
)

// TestUDPMuxShared: two agents share one socket. Each heartbeats with its
// own host ID and key from the mux's address; datagrams are handed to the
// agent whose host ID they carry, authenticated with its key; a closed
// agent neither heartbeats nor gets datagrams.
func TestUDPMuxShared(t *testing.T) {
	const idA, idB = 7, 8
	rawA, rawB := testKey(t.Name()+"a"), testKey(t.Name()+"b")
	keyA, err := wire.NewKey(rawA)
	if err != nil {
		t.Fatal(err)
	}
	keyB, err := wire.NewKey(rawB)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctrl := newFakeUDPKeys(t, conn, keyA, map[uint32][]byte{idA: rawA, idB: rawB})

	mux, err := NewUDPMux(UDPMuxConfig{Listen: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := mux.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := mux.Close(); err != nil {
			t.Error(err)
		}
	}()
	muxAddr := netip.MustParseAddrPort(mux.LocalAddr().String())

	start := func(name string, id uint32, raw []byte) *Agent {
		st := newFakeStream(t, raw, id)
		a, err := New(Config{
			Host: name, StreamAddrs: []string{st.addr()}, UDPAddr: ctrl.addr(), UDPMux: mux, Key: raw,
			Driver: newSim(t), Logger: testLogger(t), HeartbeatInterval: 5 * time.Millisecond,
			ReconcileInterval: time.Hour, Backoff: backoff.Policy{Min: time.Millisecond, Max: 20 * time.Millisecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		st.accept(t)
		waitFor(t, name+"'s host ID", func() bool { return a.HostID() == id })
		return a
	}
	a := start("h1", idA, rawA)
	b := start("h2", idB, rawB)
	defer b.Close()
	defer a.Close()
	if a.LocalUDPAddr().String() != mux.LocalAddr().String() {
		t.Errorf("agent's UDP address %s, want the mux's %s", a.LocalUDPAddr(), mux.LocalAddr())
	}

	// Heartbeats of both, each with its own ID, from the mux's socket.
	seen := map[uint32]bool{}
	waitFor(t, "heartbeats of both hosts", func() bool {
		d := next(t, ctrl.heartbeats, "heartbeat")
		if d.from.Port() != muxAddr.Port() {
			t.Fatalf("heartbeat of host %d from %s, want the mux's port %d", d.hdr.HostID, d.from, muxAddr.Port())
		}
		seen[d.hdr.HostID] = true
		return seen[idA] && seen[idB]
	})

	// Datagrams reach the host they name, checked with its key.
	ctrl.sealTo(t, muxAddr, idB, &wire.HeartbeatAck{}, &keyB)
	waitFor(t, "B's ack", func() bool { return b.Stats().HeartbeatAcks == 1 })
	ctrl.sealTo(t, muxAddr, idA, &wire.HeartbeatAck{}, &keyB) // A's ID, B's key
	waitFor(t, "the forged datagram to be rejected", func() bool { return a.Stats().DatagramsRejected == 1 })
	ctrl.sealTo(t, muxAddr, 99, &wire.HeartbeatAck{}, &keyA) // nobody's
	waitFor(t, "the datagram for no member to be rejected", func() bool { return mux.Rejected() == 1 })
	if sa, sb := a.Stats(), b.Stats(); sa.HeartbeatAcks != 0 || sb.DatagramsRejected != 0 {
		t.Errorf("A: %d acks, B: %d rejected; want 0 and 0", sa.HeartbeatAcks, sb.DatagramsRejected)
	}

	// A leaves: B keeps beating, A is silent and unknown.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for len(ctrl.heartbeats) > 0 {
		<-ctrl.heartbeats
	}
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
	if b.Stats().HeartbeatsSent == 0 {
		t.Error("B sent no heartbeat")
	}
	ctrl.sealTo(t, muxAddr, idA, &wire.HeartbeatAck{}, &keyA)
	waitFor(t, "the datagram for the closed agent to be rejected", func() bool { return mux.Rejected() == 2 })
}

// channelDriver hides the sim driver's miss callback, so the agent reads
// the Misses channel as it does with the linux driver.
type channelDriver struct{ datapath.Driver }

// TestMissesChannel: misses of a driver without a callback are read from
// its channel and become lookups.
func TestMissesChannel(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Driver = channelDriver{c.Driver} })
	h.connect(t)
	h.learned(t)
	if st := h.agent.Stats(); st.LookupRequests != 1 || st.AnswersFound != 1 {
		t.Errorf("stats %+v: want 1 lookup request, 1 answer found", st)
	}
}

// TestUDPMuxGSO: a batch of heartbeats to two addresses, of two sizes,
// reaches each address as the very datagrams it would without
// segmentation offload, each counted once on its sender; and a kernel that
// refuses the offload (a socket without UDP checksums refuses it with
// EINVAL) turns it off, the datagrams leaving one by one instead.
func TestUDPMuxGSO(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "segmented", true: "refused"}[refuse], func(t *testing.T) {
			mux, err := NewUDPMux(UDPMuxConfig{Listen: "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			if err := mux.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			defer mux.Close()
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
				if sinks[i], err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
					t.Fatal(err)
				}
				defer sinks[i].Close()
			}
			// Sink 0 gets one datagram (alone in its group), sink 1 six of
			// 52 bytes and one of 60; every datagram names its sender.
			b := newHBBatch(8, true)
			senders := make([]*Agent, 8)
			want := [2][]string{}
			for i := range senders {
				senders[i] = &Agent{}
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
			for i, a := range senders {
				if n := a.counters.heartbeats.Load(); n != 1 {
					t.Errorf("sender %d: %d heartbeats counted, want 1", i, n)
				}
			}
			if mux.gso == refuse {
				t.Errorf("GSO on after the batch: %v, want %v", mux.gso, !refuse)
			}
		})
	}
}
