package linux

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// neighMsg encodes an RTM_NEWNEIGH body: an ndmsg of family, ifindex, then
// attributes (type, value).
func neighMsg(family byte, ifindex int32, attrs ...[]byte) []byte {
	b := make([]byte, 12)
	b[0] = family
	nativeEndian.PutUint32(b[4:8], uint32(ifindex))
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

// nlattr encodes one netlink attribute, padded to 4 bytes.
func nlattr(typ uint16, v []byte) []byte {
	b := make([]byte, 4, 4+len(v)+3)
	nativeEndian.PutUint16(b[0:2], uint16(4+len(v)))
	nativeEndian.PutUint16(b[2:4], typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// FuzzParseNeighMsg parses arbitrary neighbour messages (the kernel's
// misses): it never panics, takes only IPv4 ndmsgs with a destination, and
// a message built from an address and an interface gives them back.
func FuzzParseNeighMsg(f *testing.F) {
	f.Add(neighMsg(unix.AF_INET, 7, nlattr(unix.NDA_DST, []byte{10, 0, 1, 20})), []byte{10, 0, 1, 20}, int32(7))
	f.Add(neighMsg(unix.AF_INET, 3, nlattr(unix.NDA_LLADDR, make([]byte, 6)), nlattr(unix.NDA_DST, []byte{192, 0, 2, 1})), []byte{1, 2, 3, 4}, int32(-1))
	f.Add(neighMsg(unix.AF_INET6, 3, nlattr(unix.NDA_DST, make([]byte, 16))), []byte{}, int32(0))
	f.Add([]byte{2, 0, 0, 0, 1}, []byte{9, 9, 9, 9}, int32(1))
	f.Fuzz(func(t *testing.T, msg, addr []byte, ifindex int32) {
		ip, idx, ok := parseNeighMsg(msg)
		if ok && (!ip.IsValid() || len(msg) < 12 || msg[0] != unix.AF_INET || idx != int32(nativeEndian.Uint32(msg[4:8]))) {
			t.Fatalf("parsed %v on %d from %x", ip, idx, msg)
		}
		if len(addr) != 4 {
			return
		}
		want := netip.AddrFrom4([4]byte(addr))
		ip, idx, ok = parseNeighMsg(neighMsg(unix.AF_INET, ifindex, nlattr(unix.NDA_DST, addr)))
		if !ok || ip != want || idx != ifindex {
			t.Fatalf("message of %v on %d parsed as %v on %d (ok %v)", want, ifindex, ip, idx, ok)
		}
	})
}
