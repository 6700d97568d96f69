package flows_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/observe/flows"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func key(src, dst string, sport, dport uint16) datapath.FlowKey {
	return datapath.FlowKey{VNI: 100, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: datapath.ProtoTCP, SrcPort: sport, DstPort: dport}
}

func TestTracker(t *testing.T) {
	a, b := key("10.0.1.10", "10.0.1.20", 40000, 80), key("10.0.1.11", "10.0.1.20", 40001, 80)
	var tr flows.Tracker
	steps := []struct {
		name  string
		flows []datapath.FlowSample
		want  []flows.Record
	}{
		{"first sight", []datapath.FlowSample{{FlowKey: a, Packets: 10, Bytes: 1000, Last: t0}},
			[]flows.Record{{FlowKey: a, Packets: 10, Bytes: 1000, Start: t0, End: t0}}},
		{"delta, and a new flow dropped by policy", []datapath.FlowSample{
			{FlowKey: a, Packets: 15, Bytes: 1500, Last: t0.Add(time.Second)},
			{FlowKey: b, Packets: 3, Bytes: 180, Dropped: 3, Reason: datapath.DropPolicy, Last: t0.Add(time.Second)}},
			[]flows.Record{
				{FlowKey: a, Packets: 5, Bytes: 500, Start: t0, End: t0.Add(time.Second)},
				{FlowKey: b, Packets: 3, Bytes: 180, Dropped: 3, Reason: datapath.DropPolicy, Start: t0.Add(time.Second), End: t0.Add(time.Second)}}},
		{"idle flows give no record", []datapath.FlowSample{{FlowKey: a, Packets: 15, Bytes: 1500, Last: t0.Add(time.Second)}}, nil},
		{"a counter that went back is a new flow", []datapath.FlowSample{{FlowKey: a, Packets: 2, Bytes: 200, Last: t0.Add(3 * time.Second)}},
			[]flows.Record{{FlowKey: a, Packets: 2, Bytes: 200, Start: t0.Add(3 * time.Second), End: t0.Add(3 * time.Second)}}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			got := tr.Update(&datapath.Traffic{At: t0.Add(5 * time.Second), Flows: s.flows})
			if diff := cmp.Diff(s.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRecordVerdictAndTop(t *testing.T) {
	rs := []flows.Record{
		{FlowKey: key("10.0.1.1", "10.0.1.2", 1, 2), Bytes: 10, Packets: 1},
		{FlowKey: key("10.0.1.3", "10.0.1.2", 1, 2), Bytes: 30, Packets: 3, Dropped: 3},
		{FlowKey: key("10.0.1.4", "10.0.1.2", 1, 2), Bytes: 20, Packets: 2, Dropped: 1},
	}
	top := flows.Top(rs, 2)
	var got []string
	for _, r := range top {
		got = append(got, r.Src.String()+" "+r.Verdict())
	}
	if diff := cmp.Diff([]string{"10.0.1.3 drop", "10.0.1.4 partial"}, got); diff != "" {
		t.Errorf("top (-want +got):\n%s", diff)
	}
}

// TestIPFIXCollector exports records to a real UDP collector that decodes
// them with ParseIPFIX: IPv4 and IPv6, more records than one message
// holds, every field back.
func TestIPFIXCollector(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	x, err := flows.NewExporter(t.Context(), pc.LocalAddr().String(), 7)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	var want []flows.Record
	for i := 1; i <= 50; i++ {
		r := flows.Record{FlowKey: key("10.0.1.10", "10.0.2.20", uint16(40000+i), 443), Bytes: uint64(1000 * i), Packets: uint64(i),
			Start: t0, End: t0.Add(time.Duration(i) * time.Millisecond)}
		if i%10 == 0 {
			r.Dropped, r.Reason = r.Packets, datapath.DropPolicy
		}
		want = append(want, r)
	}
	v6 := flows.Record{FlowKey: datapath.FlowKey{VNI: 0xabcdef, Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("fd00::2"),
		Proto: datapath.ProtoICMP, DstPort: 8 << 8}, Bytes: 84, Packets: 1, Start: t0, End: t0}
	want = append(want, v6)
	n, err := x.Export(want, t0)
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("sent %d messages, want at least 3 (50 IPv4 records do not fit one, IPv6 has its own)", n)
	}
	ts := flows.Templates{}
	var got []flows.Record
	buf := make([]byte, 65536)
	_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range n {
		m, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		rs, domain, err := flows.ParseIPFIX(buf[:m], ts)
		if err != nil {
			t.Fatal(err)
		}
		if domain != 7 {
			t.Errorf("domain %d, want 7", domain)
		}
		got = append(got, rs...)
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y time.Time) bool { return x.Equal(y) })); diff != "" {
		t.Errorf("collected records (-want +got):\n%s", diff)
	}
}

func FuzzParseIPFIX(f *testing.F) {
	var e flows.Encoder
	for _, m := range e.AppendMessages([]flows.Record{{FlowKey: key("10.0.1.1", "10.0.1.2", 1, 2), Bytes: 5, Packets: 1, Start: t0, End: t0}}, t0) {
		f.Add(m)
	}
	f.Add([]byte{0, 10, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ts := flows.Templates{}
		rs, _, err := flows.ParseIPFIX(b, ts)
		if err != nil && len(rs) > 0 {
			t.Fatal("records with an error")
		}
	})
}
