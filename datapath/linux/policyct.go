package linux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/datapath"
)

// Flushing the connections a changed policy no longer allows. Each VPC has
// its own conntrack table (its router namespace), so overlapping tenants
// never share connection state. After a change, every entry of the
// namespace is judged again as its first packet was (datapath.Flow), with
// the current policies of the endpoints at its ends and the sender's
// identity (the entry's mark, set by the forward chain); the entries no
// longer allowed are deleted. Their next packets are mid-stream and, with
// nf_conntrack_tcp_loose=0, make no new entry: the connection is dead.
// Allowed connections keep their entries and never notice.

// ctnetlink attributes and messages (linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaTupleOrig = 1
	ctaMark      = 8

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2

	ctaProtoNum      = 1
	ctaProtoDstPort  = 3
	ctaProtoICMPType = 5
	ctaProtoICMPCode = 6

	ipctnlMsgCtGet    = 1
	ipctnlMsgCtDelete = 2
)

// ctEntry is one conntrack entry, as the flush judges it.
type ctEntry struct {
	src, dst           netip.Addr
	proto              uint8
	dport              uint16
	icmpType, icmpCode uint8
	mark               uint32
	orig               []byte // the CTA_TUPLE_ORIG attribute, to delete by
}

func ctHeader(msg uint8) mdnetlink.HeaderType {
	return mdnetlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | uint16(msg))
}

// nfgenmsg for IPv4, version 0, resource 0.
var nfgenIPv4 = []byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}

// flushDenied deletes the conntrack entries of a VPC namespace that the
// policies of eps (the VPC's local endpoints) no longer allow, and returns
// how many it deleted.
func flushDenied(ns netns.NsHandle, eps []*datapath.Endpoint) (int, error) {
	c, err := mdnetlink.Dial(unix.NETLINK_NETFILTER, &mdnetlink.Config{NetNS: int(ns)})
	if err != nil {
		return 0, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(mdnetlink.Message{
		Header: mdnetlink.Header{Type: ctHeader(ipctnlMsgCtGet), Flags: mdnetlink.Request | mdnetlink.Dump},
		Data:   nfgenIPv4,
	})
	if err != nil {
		return 0, fmt.Errorf("conntrack dump: %w", err)
	}
	byIP := make(map[netip.Addr]*datapath.Endpoint, len(eps))
	for _, e := range eps {
		byIP[e.IP] = e
	}
	n := 0
	var errs []error
	for _, m := range msgs {
		ce, ok := parseCtEntry(m.Data)
		if !ok || ctAllowed(ce, byIP[ce.src], byIP[ce.dst]) {
			continue
		}
		_, err := c.Execute(mdnetlink.Message{
			Header: mdnetlink.Header{Type: ctHeader(ipctnlMsgCtDelete), Flags: mdnetlink.Request | mdnetlink.Acknowledge},
			Data:   append(slices.Clone(nfgenIPv4), ce.orig...),
		})
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("conntrack delete: %d failed, first: %w", len(errs), errs[0])
	}
	return n, nil
}

// ctAllowed judges an entry like its first packet: the egress policy of
// its sender and the ingress policy of its receiver, when they are local
// endpoints. A local sender's packets carry its current identity; a
// remote one's is the entry's mark.
func ctAllowed(ce ctEntry, from, to *datapath.Endpoint) bool {
	f := datapath.Flow{Proto: datapath.Protocol(ce.proto), Port: ce.dport, ICMPType: ce.icmpType, ICMPCode: ce.icmpCode}
	if from != nil {
		f.Peer = ce.dst
		if !from.Policy.AllowsEgress(f) {
			return false
		}
	}
	if to != nil {
		f.Peer, f.PeerIdentity = ce.src, ce.mark&datapath.MarkIdentityMask
		if from != nil {
			f.PeerIdentity = from.Identity
		}
		if !to.Policy.AllowsIngress(f) {
			return false
		}
	}
	return true
}

// parseCtEntry decodes a conntrack dump message (nfgenmsg + attributes).
func parseCtEntry(b []byte) (ctEntry, bool) {
	var ce ctEntry
	if len(b) < 4 {
		return ce, false
	}
	ad, err := mdnetlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return ce, false
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleOrig:
			raw := ad.Bytes()
			attr, err := mdnetlink.MarshalAttributes([]mdnetlink.Attribute{{Type: ctaTupleOrig | unix.NLA_F_NESTED, Data: raw}})
			if err != nil {
				return ce, false
			}
			ce.orig = attr
			ad.Nested(func(nad *mdnetlink.AttributeDecoder) error { return parseCtTuple(nad, &ce) })
		case ctaMark:
			ce.mark = ad.Uint32()
		}
	}
	return ce, ad.Err() == nil && ce.src.IsValid() && ce.dst.IsValid()
}

func parseCtTuple(ad *mdnetlink.AttributeDecoder, ce *ctEntry) error {
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleIP:
			ad.Nested(func(ad *mdnetlink.AttributeDecoder) error {
				for ad.Next() {
					a, _ := netip.AddrFromSlice(ad.Bytes())
					switch ad.Type() {
					case ctaIPv4Src:
						ce.src = a
					case ctaIPv4Dst:
						ce.dst = a
					}
				}
				return nil
			})
		case ctaTupleProto:
			ad.Nested(func(ad *mdnetlink.AttributeDecoder) error {
				for ad.Next() {
					switch ad.Type() {
					case ctaProtoNum:
						ce.proto = ad.Uint8()
					case ctaProtoDstPort:
						ce.dport = ad.Uint16()
					case ctaProtoICMPType:
						ce.icmpType = ad.Uint8()
					case ctaProtoICMPCode:
						ce.icmpCode = ad.Uint8()
					}
				}
				return nil
			})
		}
	}
	return nil
}
