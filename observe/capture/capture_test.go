package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"golang.org/x/net/bpf"
)

// frame builds an Ethernet/IPv4 frame with a TCP, UDP or ICMP header.
func frame(src, dst string, proto uint8, sport, dport uint16) []byte {
	b := make([]byte, 14+20+8)
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(ip[2:], 28)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], dport)
	return b
}

// TestCompileFilter runs the programs libpcap compiles on packets, in
// the x/net/bpf VM.
func TestCompileFilter(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump (libpcap's compiler) not installed")
	}
	var c Compiler
	web80 := frame("10.0.1.2", "10.0.2.2", 6, 41000, 80)
	web443 := frame("10.0.1.2", "10.0.2.2", 6, 41000, 443)
	dns := frame("10.0.1.3", "10.0.2.9", 17, 5353, 53)
	ping := frame("10.0.3.1", "10.0.1.2", 1, 0x0800, 0)
	all := map[string][]byte{"web80": web80, "web443": web443, "dns": dns, "ping": ping}
	tests := []struct {
		expr  string
		match []string
	}{
		{"", []string{"dns", "ping", "web443", "web80"}},
		{"tcp", []string{"web443", "web80"}},
		{"udp", []string{"dns"}},
		{"icmp", []string{"ping"}},
		{"tcp port 80", []string{"web80"}},
		{"port 53", []string{"dns"}},
		{"tcp dst port 443", []string{"web443"}},
		{"src port 5353", []string{"dns"}},
		{"host 10.0.1.3", []string{"dns"}},
		{"src host 10.0.1.2", []string{"web443", "web80"}},
		{"dst host 10.0.1.2", []string{"ping"}},
		{"net 10.0.2.0/24", []string{"dns", "web443", "web80"}},
		{"src net 10.0.3.0/24", []string{"ping"}},
		{"not tcp", []string{"dns", "ping"}},
		{"tcp and not port 443", []string{"web80"}},
		{"udp or icmp", []string{"dns", "ping"}},
		{"host 10.0.1.2 and (port 80 or port 443)", []string{"web443", "web80"}},
		{"ether src 02:00:00:00:00:01", []string{"dns", "ping", "web443", "web80"}},
		{"ip", []string{"dns", "ping", "web443", "web80"}},
		{"arp", nil},
		{"ip[9] == 1", []string{"ping"}},
		{"icmp[icmptype] == icmp-echo", []string{"ping"}},
		{"portrange 79-81", []string{"web80"}},
		{"udp[0:2] = 5353", []string{"dns"}},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			prog, err := c.Compile(context.Background(), tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, name := range []string{"dns", "ping", "web443", "web80"} {
				if prog == nil {
					got = append(got, name)
					continue
				}
				insns, _ := bpf.Disassemble(prog)
				vm, err := bpf.NewVM(insns)
				if err != nil {
					t.Fatal(err)
				}
				if n, err := vm.Run(all[name]); err != nil {
					t.Fatal(err)
				} else if n > 0 {
					got = append(got, name)
				}
			}
			if diff := gocmp.Diff(tt.match, got); diff != "" {
				t.Errorf("matches (-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{"host no-such-host.invalid", "tcp port", "(((", "-w /tmp/x"} {
		t.Run("refused "+bad, func(t *testing.T) {
			if _, err := c.Compile(context.Background(), bad); !errors.Is(err, ErrFilter) {
				t.Errorf("Compile(%q) = %v, want ErrFilter", bad, err)
			}
		})
	}
	if _, err := (Compiler{Path: "/nonexistent/tcpdump"}).Compile(context.Background(), "tcp"); !errors.Is(err, ErrFilter) {
		t.Errorf("without tcpdump: %v, want ErrFilter", err)
	}
}

func run(t *testing.T, prog []bpf.RawInstruction, pkt []byte) int {
	t.Helper()
	insns, _ := bpf.Disassemble(prog)
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	n, err := vm.Run(pkt)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUnderlayProgramAndCheck(t *testing.T) {
	vx := make([]byte, 14+20+8+8+14)
	binary.BigEndian.PutUint16(vx[12:], 0x0800)
	vx[14], vx[14+9] = 0x45, 17
	binary.BigEndian.PutUint16(vx[14+20+2:], VXLANPort)
	binary.BigEndian.PutUint32(vx[14+20+8+4:], 4096<<8)
	if run(t, UnderlayProgram(4096), vx) == 0 || run(t, UnderlayProgram(4097), vx) != 0 {
		t.Error("underlay program does not select by VNI")
	}
	prog, err := Decode(Encode(UnderlayProgram(7)))
	if err != nil || len(prog) != len(UnderlayProgram(7)) {
		t.Fatalf("round trip: %v", err)
	}
	for name, bad := range map[string][]bpf.RawInstruction{
		"empty":         {},
		"past the end":  {{Op: 0x15, Jt: 5, K: 1}, {Op: 0x06, K: 1}},
		"no return":     {{Op: 0x28, K: 12}},
		"not decodable": {{Op: 0xffff}, {Op: 0x06}},
	} {
		if err := CheckProgram(bad); err == nil {
			t.Errorf("%s: CheckProgram accepted it", name)
		}
	}
}

func records() []Record {
	t0 := time.Unix(1700000000, 5)
	return []Record{
		{Type: RecInterface, Iface: 1, Name: "wfte0a0b0c0d", Endpoint: "acme/web-1"},
		{Type: RecInterface, Iface: 2, Name: "ul0", Underlay: true},
		{Type: RecPacket, Iface: 1, Out: true, Time: t0, Length: 42, Data: frame("10.0.1.2", "10.0.2.2", 6, 1, 80)},
		{Type: RecPacket, Iface: 2, Drop: 1, Time: t0.Add(time.Millisecond), Length: 100, Data: []byte{1, 2, 3}},
		{Type: RecMark, Time: t0.Add(time.Second), Lost: 3},
		{Type: RecEnd, Lost: 4},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, r := range records() {
		if err := w.Write(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	rd := NewReader(&buf)
	var got []Record
	for {
		var r Record
		err := rd.Next(&r)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		r.Data = bytes.Clone(r.Data)
		got = append(got, r)
	}
	if diff := gocmp.Diff(records(), got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}

// FuzzReader decodes arbitrary uploads: no panic, and what decodes
// encodes back to the same bytes.
func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, r := range records() {
		_ = w.Write(&r)
	}
	_ = w.Flush()
	f.Add(buf.Bytes())
	f.Add([]byte(magic + "\x02\x00\x00\x00\x10"))
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := NewReader(bytes.NewReader(in))
		var again bytes.Buffer
		w := NewWriter(&again)
		for i := 0; i < 1000; i++ {
			var r Record
			if err := rd.Next(&r); err != nil {
				if err != io.EOF && !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrMalformed", err)
				}
				break
			}
			if err := w.Write(&r); err != nil {
				t.Fatalf("re-encode %+v: %v", r, err)
			}
		}
		_ = w.Flush()
		if !bytes.HasPrefix(in, again.Bytes()) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// TestMergerOrders merges two hosts' streams, interleaved out of order
// within the hold, into one pcapng whose packets are in time order, each
// with its interface block and comment; tshark reads it when installed.
func TestMergerOrders(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.pcapng")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMerger(f)
	m.Snaplen = 1000
	t0 := time.Unix(1700000000, 0)
	now := t0
	add := func(host string, r Record) {
		t.Helper()
		if err := m.Add(host, &r, now); err != nil {
			t.Fatal(err)
		}
	}
	add("h1", Record{Type: RecInterface, Iface: 1, Name: "wfte1", Endpoint: "acme/web-1"})
	add("h2", Record{Type: RecInterface, Iface: 1, Name: "wfte2", Endpoint: "acme/db-1"})
	pkt := frame("10.0.1.2", "10.0.2.2", 6, 1, 80)
	add("h1", Record{Type: RecPacket, Iface: 1, Out: true, Time: t0.Add(1 * time.Millisecond), Length: 42, Data: pkt})
	add("h1", Record{Type: RecPacket, Iface: 1, Out: true, Time: t0.Add(3 * time.Millisecond), Length: 42, Data: pkt})
	if s := m.Stats(); s.Packets != 0 {
		t.Fatalf("wrote %d packets before h2 said anything", s.Packets)
	}
	add("h2", Record{Type: RecPacket, Iface: 1, Time: t0.Add(2 * time.Millisecond), Length: 42, Data: pkt})
	add("h2", Record{Type: RecMark, Time: t0.Add(10 * time.Millisecond)})
	add("h1", Record{Type: RecEnd})
	add("h2", Record{Type: RecPacket, Iface: 1, Time: t0, Length: 42, Data: pkt}) // late
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if s := m.Stats(); s.Packets != 3 || s.Late != 1 {
		t.Errorf("stats %+v, want 3 packets, 1 late", s)
	}
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	out, err := exec.Command(tshark, "-r", path, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.time_epoch", "-e", "frame.comment").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "h1/wfte1") || !strings.HasPrefix(lines[1], "h2/wfte2") || !strings.Contains(lines[1], "to endpoint acme/db-1") {
		t.Errorf("tshark reads:\n%s", out)
	}
}
