package capture

import (
	"container/heap"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Merger merges the upload streams of a capture's hosts into one pcapng
// file, in time order: an interface block per (host, interface), whose
// comment names the host, the endpoint and the interface, and a comment
// per packet naming its host, endpoint and direction (and a dropped
// packet's reason). A packet is written once every host that uploads has
// reported (a packet or a Mark) that nothing earlier follows, or it is
// older than Hold; a packet that comes later than one already written
// with a later time is not written and counts as Late.
type Merger struct {
	// Count bounds the packets written (0: no bound); Snaplen the bytes of
	// each.
	Count   int64
	Snaplen int
	// Hold is how long a packet may wait for a slow host (default 1s).
	Hold time.Duration
	// DropReason names a dropped packet's reason (nil: its number).
	DropReason func(uint8) string

	mu     sync.Mutex
	out    io.Writer
	w      *pcapgo.NgWriter
	hosts  map[string]*hostQueue
	ifaces map[ifaceKey]int
	last   time.Time
	stats  Stats
	seq    uint64 // orders packets of equal times as they came
}

// Stats is what a Merger wrote and did not.
type Stats struct {
	Packets, Bytes int64
	// Lost is what the hosts reported they could not send; Late what
	// came after a later packet was written.
	Lost, Late uint64
	// Full says Count is reached.
	Full bool
}

type ifaceKey struct {
	host string
	id   uint16
}

type hostQueue struct {
	q      packetHeap
	mark   time.Time
	ended  bool
	lost   uint64
	ifaces map[uint16]ifaceInfo
}

type ifaceInfo struct {
	name, endpoint string
	underlay       bool
}

type queued struct {
	t      time.Time
	iface  uint16
	out    bool
	drop   uint8
	length uint32
	data   []byte
	seq    uint64
}

type packetHeap []queued

func (h packetHeap) Len() int { return len(h) }
func (h packetHeap) Less(i, j int) bool {
	if h[i].t.Equal(h[j].t) {
		return h[i].seq < h[j].seq
	}
	return h[i].t.Before(h[j].t)
}
func (h packetHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *packetHeap) Push(x any)   { *h = append(*h, x.(queued)) }
func (h *packetHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// NewMerger returns a Merger that writes the pcapng file to out.
func NewMerger(out io.Writer) *Merger {
	return &Merger{out: out, hosts: map[string]*hostQueue{}, ifaces: map[ifaceKey]int{}, Hold: time.Second}
}

// Add takes one record of host's upload and writes what it can.
func (m *Merger) Add(host string, rec *Record, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hosts[host]
	if h == nil {
		h = &hostQueue{ifaces: map[uint16]ifaceInfo{}}
		m.hosts[host] = h
	}
	switch rec.Type {
	case RecInterface:
		h.ifaces[rec.Iface] = ifaceInfo{rec.Name, rec.Endpoint, rec.Underlay}
	case RecPacket:
		if m.stats.Full {
			return nil
		}
		if rec.Time.Before(m.last) {
			m.stats.Late++
			return nil
		}
		data := rec.Data
		if m.Snaplen > 0 && len(data) > m.Snaplen {
			data = data[:m.Snaplen]
		}
		m.seq++
		heap.Push(&h.q, queued{t: rec.Time, iface: rec.Iface, out: rec.Out, drop: rec.Drop, length: rec.Length, data: slices.Clone(data), seq: m.seq})
		if rec.Time.After(h.mark) {
			h.mark = rec.Time
		}
	case RecMark:
		if rec.Time.After(h.mark) {
			h.mark = rec.Time
		}
		h.lost = rec.Lost
	case RecEnd:
		h.ended, h.lost = true, rec.Lost
	}
	return m.drain(now, false)
}

// Flush writes every queued packet (the capture is over) and flushes the
// file.
func (m *Merger) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.drain(time.Time{}, true); err != nil {
		return err
	}
	if m.w == nil { // no packet: still a valid file
		opts := pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "weft capture"}}
		w, err := pcapgo.NewNgWriterInterface(m.out, pcapgo.NgInterface{Name: "none", LinkType: layers.LinkTypeEthernet, SnapLength: uint32(m.snap()),
			Comment: "no packet was captured"}, opts)
		if err != nil {
			return fmt.Errorf("capture: pcapng: %w", err)
		}
		m.w = w
	}
	return m.flush()
}

// Tick writes what has waited longer than Hold.
func (m *Merger) Tick(now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.drain(now, false)
}

// Stats returns what was written so far.
func (m *Merger) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	for _, h := range m.hosts {
		s.Lost += h.lost
	}
	return s
}

// Hosts returns the hosts that uploaded, sorted.
func (m *Merger) Hosts() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.hosts))
	for h := range m.hosts {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// drain writes the earliest queued packet while every host has shown
// that nothing earlier follows (or force, or it waited past Hold).
func (m *Merger) drain(now time.Time, force bool) error {
	wrote := false
	for !m.stats.Full {
		var best *hostQueue
		var bestHost string
		for name, h := range m.hosts {
			if len(h.q) > 0 && (best == nil || h.q.Less2(best.q)) {
				best, bestHost = h, name
			}
		}
		if best == nil {
			break
		}
		t := best.q[0].t
		ready := force || !now.IsZero() && now.Sub(t) > m.Hold
		if !ready {
			ready = true
			for _, h := range m.hosts {
				if h != best && !h.ended && len(h.q) == 0 && h.mark.Before(t) {
					ready = false
					break
				}
			}
		}
		if !ready {
			break
		}
		p := heap.Pop(&best.q).(queued)
		if err := m.write(bestHost, best, p); err != nil {
			return err
		}
		wrote = true
	}
	if wrote {
		return m.flush()
	}
	return nil
}

// Less2 orders two hosts' queue heads.
func (h packetHeap) Less2(o packetHeap) bool {
	return h[0].t.Before(o[0].t) || h[0].t.Equal(o[0].t) && h[0].seq < o[0].seq
}

func (m *Merger) write(host string, h *hostQueue, p queued) error {
	k := ifaceKey{host, p.iface}
	info := h.ifaces[p.iface]
	id, ok := m.ifaces[k]
	if !ok {
		intf := pcapgo.NgInterface{
			Name:       host + "/" + info.name,
			LinkType:   layers.LinkTypeEthernet,
			SnapLength: uint32(m.snap()),
			Comment:    ifaceComment(host, info),
		}
		if m.w == nil {
			opts := pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "weft capture"}}
			w, err := pcapgo.NewNgWriterInterface(m.out, intf, opts)
			if err != nil {
				return fmt.Errorf("capture: pcapng: %w", err)
			}
			m.w = w
		} else {
			var err error
			if id, err = m.w.AddInterface(intf); err != nil {
				return fmt.Errorf("capture: pcapng: %w", err)
			}
		}
		m.ifaces[k] = id
	}
	dir := "to"
	flags := pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionOutbound}
	if p.out {
		dir = "from"
		flags.Direction = pcapgo.NgEpbFlagDirectionInbound
	}
	comment := fmt.Sprintf("host %s, %s endpoint %s", host, dir, info.endpoint)
	if info.underlay {
		comment = "host " + host + ", underlay, received"
		flags.Direction = pcapgo.NgEpbFlagDirectionInbound
		if p.out {
			comment = "host " + host + ", underlay, sent"
			flags.Direction = pcapgo.NgEpbFlagDirectionOutbound
		}
	}
	if p.drop != 0 {
		reason := fmt.Sprint(p.drop)
		if m.DropReason != nil {
			reason = m.DropReason(p.drop)
		}
		comment += ", dropped: " + reason
	}
	ci := gopacket.CaptureInfo{Timestamp: p.t, CaptureLength: len(p.data), Length: max(int(p.length), len(p.data)), InterfaceIndex: id}
	if err := m.w.WritePacketWithOptions(ci, p.data, pcapgo.NgPacketOptions{Comments: []string{comment}, Flags: &flags}); err != nil {
		return fmt.Errorf("capture: pcapng: %w", err)
	}
	m.last = p.t
	m.stats.Packets++
	m.stats.Bytes += int64(len(p.data))
	if m.Count > 0 && m.stats.Packets >= m.Count {
		m.stats.Full = true
	}
	return nil
}

func (m *Merger) snap() int {
	if m.Snaplen > 0 {
		return m.Snaplen
	}
	return MaxSnap
}

func (m *Merger) flush() error {
	if m.w == nil {
		return nil
	}
	if err := m.w.Flush(); err != nil {
		return fmt.Errorf("capture: pcapng: %w", err)
	}
	return nil
}

func ifaceComment(host string, info ifaceInfo) string {
	if info.underlay {
		return fmt.Sprintf("host %s, underlay interface %s (encapsulated packets, outer headers included)", host, info.name)
	}
	return fmt.Sprintf("host %s, endpoint %s, interface %s (the endpoint's veth, router side)", host, info.endpoint, info.name)
}
