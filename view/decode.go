package view

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/weftnet/weft/wire"
)

// Decode turns a wire.Resource back into *Host, *VPC, *Endpoint, *Policy,
// *QoS, *Trace or *Capture. The result is exactly what json.Unmarshal makes
// of r.Bytes(): r.Data, followed by r.Tail if a sender split it. Every
// type is decoded in one pass without reflection when its JSON is in the
// plain form Encode writes.
func Decode(r wire.Resource) (any, error) {
	if len(r.Tail) > 0 {
		r.Data, r.Tail = r.Bytes(), nil
	}
	var v any
	ok := false
	switch r.Key.Type {
	case TypeHost:
		h := &Host{}
		v, ok = h, fastHost(r.Data, h)
	case TypeVPC:
		p := &VPC{}
		v, ok = p, fastVPC(r.Data, p, nil)
	case TypeEndpoint:
		e := &Endpoint{}
		v, ok = e, fastEndpoint(r.Data, e, nil)
	case TypePolicy:
		p := &Policy{}
		if ok = fastPolicy(r.Data, p, &scratch{}); !ok {
			*p = Policy{}
		}
		v = p
	case TypeQoS:
		q := &QoS{}
		v, ok = q, fastQoS(r.Data, q)
	case TypeTrace:
		v = &Trace{}
	case TypeCapture:
		v = &Capture{}
	default:
		return nil, fmt.Errorf("view: unknown resource type %q", r.Key.Type)
	}
	if ok {
		return v, nil
	}
	return slowDecode(r, v)
}

// slowDecode decodes r.Data into v, a pointer to a zero value, with
// json.Unmarshal, and returns v.
func slowDecode(r wire.Resource, v any) (any, error) {
	if err := json.Unmarshal(r.Data, v); err != nil {
		return nil, fmt.Errorf("view: decode %s: %w", r.Key, err)
	}
	return v, nil
}

// Decoder decodes view resources as Decode does, reusing its memory from
// one call to the next: the value a call returns (a pointer into the
// Decoder, for every type but Policy, which is new each time: an agent
// keeps its rules) and its slices and maps are valid
// only until the next call that returns the same type. Strings are never
// reused. A program that translates a view resource by resource, keeping
// only some fields, decodes it with one Decoder at a fraction of the
// allocations of Decode. The zero value is ready to use; a Decoder is not
// safe for concurrent use.
type Decoder struct {
	host Host
	vpc  VPC
	ep   Endpoint
	qos  QoS
	sc   scratch
}

// scratch is the storage a Decoder lends to the values it decodes, and
// the room in which the arrays of a Policy (a new one each time, with
// slices of their exact length) grow before they are copied out.
type scratch struct {
	cidrs   []string
	subnets []Subnet
	labels  map[string]string

	raw   [][]byte // the strings of an array, before they are copied
	ids   []uint32
	rules []Rule
	ports []Port
}

// Decode decodes r like the package function Decode (same results, same
// errors), into memory the Decoder reuses.
func (dec *Decoder) Decode(r wire.Resource) (any, error) {
	if len(r.Tail) > 0 {
		r.Data, r.Tail = r.Bytes(), nil
	}
	var v any
	ok := false
	switch r.Key.Type {
	case TypeHost:
		dec.host = Host{}
		v, ok = &dec.host, fastHost(r.Data, &dec.host)
		if !ok {
			dec.host = Host{}
		}
	case TypeVPC:
		dec.vpc = VPC{}
		v, ok = &dec.vpc, fastVPC(r.Data, &dec.vpc, &dec.sc)
		if !ok {
			dec.vpc = VPC{}
		}
	case TypeEndpoint:
		dec.ep = Endpoint{}
		v, ok = &dec.ep, fastEndpoint(r.Data, &dec.ep, &dec.sc)
		if !ok {
			dec.ep = Endpoint{}
		}
	case TypePolicy:
		p := &Policy{}
		if ok = fastPolicy(r.Data, p, &dec.sc); !ok {
			*p = Policy{}
		}
		v = p
	case TypeQoS:
		dec.qos = QoS{}
		v, ok = &dec.qos, fastQoS(r.Data, &dec.qos)
		if !ok {
			dec.qos = QoS{}
		}
	case TypeTrace, TypeCapture:
		return Decode(r) // rare: no reuse
	default:
		return nil, fmt.Errorf("view: unknown resource type %q", r.Key.Type)
	}
	if ok {
		return v, nil
	}
	return slowDecode(r, v)
}

// The fast decoders below decode b into a zero value, or report false if
// json.Unmarshal must decode b instead (the value is then to be zeroed).
// A non-nil sc lends its storage to the value's slices and maps.

var hostFields = []string{"name", "hostID", "underlayIP", "capacityBps"}

func fastHost(b []byte, h *Host) bool {
	var d fastDecoder
	d.Reset(b)
	return d.Document(func(key []byte) bool {
		switch string(key) {
		case "name":
			return d.Once(0) && d.String(&h.Name)
		case "hostID":
			return d.Once(1) && d.Uint32(&h.HostID)
		case "underlayIP":
			return d.Once(2) && d.String(&h.UnderlayIP)
		case "capacityBps":
			return d.Once(3) && d.Uint64(&h.CapacityBps)
		}
		return d.UnknownField(key, hostFields)
	})
}

var (
	vpcFields    = []string{"tenant", "name", "vni", "cidrs", "subnets", "defaultDeny", "maxRateBps", "minRateBps"}
	subnetFields = []string{"name", "cidr", "gateway"}
)

func fastVPC(b []byte, v *VPC, sc *scratch) bool {
	var d fastDecoder
	d.Reset(b)
	return d.Document(func(key []byte) bool {
		switch string(key) {
		case "tenant":
			return d.Once(0) && d.String(&v.Tenant)
		case "name":
			return d.Once(1) && d.String(&v.Name)
		case "vni":
			return d.Once(2) && d.Uint32(&v.VNI)
		case "cidrs":
			if !d.Once(3) {
				return false
			}
			if sc == nil {
				return d.strings(&v.CIDRs, &scratch{})
			}
			ok := d.strings(&sc.cidrs, sc)
			v.CIDRs = sc.cidrs
			return ok
		case "subnets":
			if !d.Once(4) {
				return false
			}
			if sc == nil {
				return d.subnets(&v.Subnets)
			}
			ok := d.subnets(&sc.subnets)
			v.Subnets = sc.subnets
			return ok
		case "defaultDeny":
			return d.Once(5) && d.Bool(&v.DefaultDeny)
		case "maxRateBps":
			return d.Once(6) && d.Uint64(&v.MaxRateBps)
		case "minRateBps":
			return d.Once(7) && d.Uint64(&v.MinRateBps)
		}
		return d.UnknownField(key, vpcFields)
	})
}

// subnets decodes an array of subnets into (*v)[:0], reusing its storage;
// an empty array gives an empty slice, not nil (as json.Unmarshal).
func (d *fastDecoder) subnets(v *[]Subnet) bool {
	s := (*v)[:0]
	if s == nil {
		s = []Subnet{}
	}
	ok := d.Array(func() bool {
		s = append(s, Subnet{})
		sn := &s[len(s)-1]
		return d.Object(func(key []byte) bool {
			switch string(key) {
			case "name":
				return d.Once(0) && d.String(&sn.Name)
			case "cidr":
				return d.Once(1) && d.String(&sn.CIDR)
			case "gateway":
				return d.Once(2) && d.String(&sn.Gateway)
			}
			return d.UnknownField(key, subnetFields)
		})
	})
	*v = s
	return ok
}

var endpointFields = []string{"tenant", "name", "uid", "vpc", "vni", "subnet", "cidr", "gateway", "ip", "mac",
	"netns", "qosClass", "labels", "identity", "generation"}

func fastEndpoint(b []byte, e *Endpoint, sc *scratch) bool {
	var d fastDecoder
	d.Reset(b)
	return d.Document(func(key []byte) bool {
		switch string(key) {
		case "tenant":
			return d.Once(0) && d.String(&e.Tenant)
		case "name":
			return d.Once(1) && d.String(&e.Name)
		case "uid":
			return d.Once(2) && d.String(&e.UID)
		case "vpc":
			return d.Once(3) && d.String(&e.VPC)
		case "vni":
			return d.Once(4) && d.Uint32(&e.VNI)
		case "subnet":
			return d.Once(5) && d.String(&e.Subnet)
		case "cidr":
			return d.Once(6) && d.String(&e.CIDR)
		case "gateway":
			return d.Once(7) && d.String(&e.Gateway)
		case "ip":
			return d.Once(8) && d.String(&e.IP)
		case "mac":
			return d.Once(9) && d.String(&e.MAC)
		case "netns":
			return d.Once(10) && d.String(&e.Netns)
		case "qosClass":
			return d.Once(11) && d.String(&e.QoSClass)
		case "labels":
			if !d.Once(12) {
				return false
			}
			var m map[string]string
			switch {
			case sc == nil:
				m = map[string]string{}
			case sc.labels == nil:
				m = map[string]string{}
				sc.labels = m
			default:
				m = sc.labels
				clear(m)
			}
			e.Labels = m
			return d.labels(m)
		case "identity":
			return d.Once(13) && d.Uint32(&e.Identity)
		case "generation":
			var g int
			if !d.Once(14) || !d.Int(&g) {
				return false
			}
			e.Generation = int64(g)
			return true
		}
		return d.UnknownField(key, endpointFields)
	})
}

var qosFields = []string{"tenant", "name", "minRateBps", "maxRateBps", "priority", "dscp"}

func fastQoS(b []byte, q *QoS) bool {
	var d fastDecoder
	d.Reset(b)
	return d.Document(func(key []byte) bool {
		switch string(key) {
		case "tenant":
			return d.Once(0) && d.String(&q.Tenant)
		case "name":
			return d.Once(1) && d.String(&q.Name)
		case "minRateBps":
			return d.Once(2) && d.Uint64(&q.MinRateBps)
		case "maxRateBps":
			return d.Once(3) && d.Uint64(&q.MaxRateBps)
		case "priority":
			return d.Once(4) && d.Int(&q.Priority)
		case "dscp":
			return d.Once(5) && d.Int(&q.DSCP)
		}
		return d.UnknownField(key, qosFields)
	})
}

var (
	policyFields = []string{"tenant", "name", "vpc", "ingressIsolated", "egressIsolated", "ingress", "egress", "applies"}
	ruleFields   = []string{"name", "allPeers", "identities", "prefixes", "ports"}
	portFields   = []string{"protocol", "first", "last", "icmpType", "icmpCode"}
)

func fastPolicy(b []byte, p *Policy, sc *scratch) bool {
	var d fastDecoder
	d.Reset(b)
	return d.Document(func(key []byte) bool {
		switch string(key) {
		case "tenant":
			return d.Once(0) && d.String(&p.Tenant)
		case "name":
			return d.Once(1) && d.String(&p.Name)
		case "vpc":
			return d.Once(2) && d.String(&p.VPC)
		case "ingressIsolated":
			return d.Once(3) && d.Bool(&p.IngressIsolated)
		case "egressIsolated":
			return d.Once(4) && d.Bool(&p.EgressIsolated)
		case "ingress":
			return d.Once(5) && d.rules(&p.Ingress, sc)
		case "egress":
			return d.Once(6) && d.rules(&p.Egress, sc)
		case "applies":
			return d.Once(7) && d.strings(&p.Applies, sc)
		}
		return d.UnknownField(key, policyFields)
	})
}

// rules decodes an array of rules into a new slice of its exact length
// (empty, not nil, for an empty array), growing it in sc.
func (d *fastDecoder) rules(v *[]Rule, sc *scratch) bool {
	s := sc.rules[:0]
	ok := d.Array(func() bool {
		s = append(s, Rule{})
		r := &s[len(s)-1]
		return d.Object(func(key []byte) bool {
			switch string(key) {
			case "name":
				return d.Once(0) && d.String(&r.Name)
			case "allPeers":
				return d.Once(1) && d.Bool(&r.AllPeers)
			case "identities":
				return d.Once(2) && d.uint32s(&r.Identities, sc)
			case "prefixes":
				return d.Once(3) && d.strings(&r.Prefixes, sc)
			case "ports":
				return d.Once(4) && d.ports(&r.Ports, sc)
			}
			return d.UnknownField(key, ruleFields)
		})
	})
	*v = append(make([]Rule, 0, len(s)), s...)
	clear(s) // the rules' slices are the caller's now
	sc.rules = s[:0]
	return ok
}

// ports decodes an array of ports into a new slice of its exact length,
// growing it in sc.
func (d *fastDecoder) ports(v *[]Port, sc *scratch) bool {
	s := sc.ports[:0]
	ok := d.Array(func() bool {
		s = append(s, Port{})
		p := &s[len(s)-1]
		return d.Object(func(key []byte) bool {
			var n uint64
			var i int
			switch string(key) {
			case "protocol":
				ok := d.Once(0) && d.Uint64(&n) && n <= math.MaxUint8
				p.Protocol = uint8(n)
				return ok
			case "first":
				ok := d.Once(1) && d.Uint64(&n) && n <= math.MaxUint16
				p.First = uint16(n)
				return ok
			case "last":
				ok := d.Once(2) && d.Uint64(&n) && n <= math.MaxUint16
				p.Last = uint16(n)
				return ok
			case "icmpType":
				ok := d.Once(3) && d.Int(&i) && i >= math.MinInt16 && i <= math.MaxInt16
				p.ICMPType = int16(i)
				return ok
			case "icmpCode":
				ok := d.Once(4) && d.Int(&i) && i >= math.MinInt16 && i <= math.MaxInt16
				p.ICMPCode = int16(i)
				return ok
			}
			return d.UnknownField(key, portFields)
		})
	})
	sc.ports = s
	*v = append(make([]Port, 0, len(s)), s...)
	return ok
}
