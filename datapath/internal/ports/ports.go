// Package ports is what a security policy rule allows of a peer, as the
// drivers compile it: a port set (everything, or port ranges of TCP, UDP
// and SCTP and ICMP types with their codes), in a canonical form whose
// key names equal sets alike, and port ranges split into aligned blocks
// that exact lookups match (the port with its low bits cleared).
package ports

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	"github.com/weftnet/weft/datapath"
)

// Set is what a rule allows of a peer: everything, or some ports of
// TCP/UDP/SCTP and some ICMP types and codes. A Set is not changed after
// its Key is taken.
type Set struct {
	All  bool
	L4   []Range         // sorted by protocol and port, merged (Canon)
	ICMP map[uint8]Codes // the codes allowed, by type
	k    string          // key, once computed
}

// Range is the ports first..last of a protocol.
type Range struct {
	Proto       uint8
	First, Last uint16
}

// Codes is a set of ICMP codes, a bitmap.
type Codes [4]uint64

// AllCodes holds every code.
var AllCodes = Codes{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}

func (b *Codes) addRange(lo, hi int) {
	for c := lo; c <= hi; c++ {
		b[c/64] |= 1 << (c % 64)
	}
}

// Has reports whether code is in b.
func (b Codes) Has(code uint8) bool { return b[code/64]&(1<<(code%64)) != 0 }

// Add adds the ports of one rule (none: everything).
func (s *Set) Add(ps []datapath.Port) {
	if len(ps) == 0 {
		s.All = true
		return
	}
	for _, p := range ps {
		switch p.Protocol {
		case datapath.ProtoICMP:
			if s.ICMP == nil {
				s.ICMP = map[uint8]Codes{}
			}
			typLo, typHi, codeLo, codeHi := int(p.ICMPType), int(p.ICMPType), int(p.ICMPCode), int(p.ICMPCode)
			if p.ICMPType < 0 {
				typLo, typHi = 0, 255
			}
			if p.ICMPCode < 0 {
				codeLo, codeHi = 0, 255
			}
			for t := typLo; t <= typHi; t++ {
				b := s.ICMP[uint8(t)]
				b.addRange(codeLo, codeHi)
				s.ICMP[uint8(t)] = b
			}
		default:
			first, last := p.First, p.Last
			if first == 0 && last == 0 {
				last = 65535
			} else if last == 0 {
				last = first
			}
			s.L4 = append(s.L4, Range{uint8(p.Protocol), first, last})
		}
	}
}

// Of returns the canonical set of one rule's ports.
func Of(ps []datapath.Port) *Set {
	s := &Set{}
	s.Add(ps)
	s.Canon()
	return s
}

// Union returns a new set holding both.
func (s *Set) Union(o *Set) *Set {
	u := &Set{All: s.All || o.All}
	if !u.All {
		u.L4 = append(slices.Clone(s.L4), o.L4...)
		if len(s.ICMP)+len(o.ICMP) > 0 {
			u.ICMP = make(map[uint8]Codes, len(s.ICMP)+len(o.ICMP))
			for _, m := range []map[uint8]Codes{s.ICMP, o.ICMP} {
				for t, b := range m {
					c := u.ICMP[t]
					for i := range c {
						c[i] |= b[i]
					}
					u.ICMP[t] = c
				}
			}
		}
	}
	u.Canon()
	return u
}

// Empty reports whether s allows nothing.
func (s *Set) Empty() bool { return !s.All && len(s.L4) == 0 && len(s.ICMP) == 0 }

// Canon sorts and merges the port ranges (so that equal sets are equal,
// and an interval set gets disjoint elements).
func (s *Set) Canon() {
	if s.All {
		s.L4, s.ICMP = nil, nil
		return
	}
	slices.SortFunc(s.L4, func(a, b Range) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last))
	})
	l4 := s.L4[:0]
	for _, r := range s.L4 {
		if n := len(l4); n > 0 && l4[n-1].Proto == r.Proto && uint32(r.First) <= uint32(l4[n-1].Last)+1 {
			l4[n-1].Last = max(l4[n-1].Last, r.Last)
			continue
		}
		l4 = append(l4, r)
	}
	s.L4 = l4
}

// Block is 2^Bits ports from First (aligned): how a port range is matched
// with exact lookups (the port with its low bits cleared).
type Block struct {
	Proto uint8
	First uint16
	Bits  int
}

// Blocks splits the port ranges into aligned blocks, at most 2*16 per
// range.
func (s *Set) Blocks() []Block {
	var out []Block
	for _, r := range s.L4 {
		for a, b := uint32(r.First), uint32(r.Last); a <= b; {
			bits := 0
			for bits < 16 && a&(1<<(bits+1)-1) == 0 && a+1<<(bits+1)-1 <= b {
				bits++
			}
			out = append(out, Block{r.Proto, uint16(a), bits})
			a += 1 << bits
		}
	}
	return out
}

// Key is the set's canonical text, e.g. "6:80-80,6:443-443|8:1.0.0.0,"
// (ICMP types with their codes as a bitmap).
func (s *Set) Key() string {
	if s.k != "" {
		return s.k
	}
	if s.All {
		s.k = "all"
		return s.k
	}
	b := make([]byte, 0, 16*len(s.L4)+8)
	for i, r := range s.L4 {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(r.Proto), 10)
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(r.First), 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(r.Last), 10)
	}
	b = append(b, '|')
	for t := 0; t < 256 && len(s.ICMP) > 0; t++ {
		if codes, ok := s.ICMP[uint8(t)]; ok {
			b = fmt.Appendf(b, "%d:%x.%x.%x.%x,", t, codes[0], codes[1], codes[2], codes[3])
		}
	}
	s.k = string(b)
	return s.k
}

// Allows reports whether s allows f (its protocol, port, ICMP type and
// code): what a compiled lookup must answer.
func (s *Set) Allows(f datapath.Flow) bool {
	if s.All {
		return true
	}
	if f.Proto == datapath.ProtoICMP {
		codes, ok := s.ICMP[f.ICMPType]
		return ok && codes.Has(f.ICMPCode)
	}
	for _, b := range s.Blocks() {
		if uint8(f.Proto) == b.Proto && f.Port&uint16(0xffff<<b.Bits) == b.First {
			return true
		}
	}
	return false
}
