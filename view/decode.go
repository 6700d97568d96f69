package view

import (
	"encoding/json"
	"fmt"

	"github.com/weftnet/weft/wire"
)

// Decode turns a wire.Resource back into *Host, *VPC, *Endpoint, *Policy or
// *QoS. The result is exactly what json.Unmarshal makes of r.Data (Host,
// VPC, Endpoint and QoS are decoded in one pass without reflection when
// their JSON is in the plain form Encode writes).
func Decode(r wire.Resource) (any, error) {
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
		v = &Policy{}
	case TypeQoS:
		q := &QoS{}
		v, ok = q, fastQoS(r.Data, q)
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
// Decoder, for every type but Policy) and its slices and maps are valid
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

// scratch is the storage a Decoder lends to the values it decodes.
type scratch struct {
	cidrs   []string
	subnets []Subnet
	labels  map[string]string
}

// Decode decodes r like the package function Decode (same results, same
// errors), into memory the Decoder reuses.
func (dec *Decoder) Decode(r wire.Resource) (any, error) {
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
		v = &Policy{}
	case TypeQoS:
		dec.qos = QoS{}
		v, ok = &dec.qos, fastQoS(r.Data, &dec.qos)
		if !ok {
			dec.qos = QoS{}
		}
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
	d := fastDecoder{b: b}
	return d.document(func(key []byte) bool {
		switch string(key) {
		case "name":
			return d.once(0) && d.string(&h.Name)
		case "hostID":
			return d.once(1) && d.uint32(&h.HostID)
		case "underlayIP":
			return d.once(2) && d.string(&h.UnderlayIP)
		case "capacityBps":
			return d.once(3) && d.uint64(&h.CapacityBps)
		}
		return d.unknownField(key, hostFields)
	})
}

var (
	vpcFields    = []string{"tenant", "name", "vni", "cidrs", "subnets"}
	subnetFields = []string{"name", "cidr", "gateway"}
)

func fastVPC(b []byte, v *VPC, sc *scratch) bool {
	d := fastDecoder{b: b}
	return d.document(func(key []byte) bool {
		switch string(key) {
		case "tenant":
			return d.once(0) && d.string(&v.Tenant)
		case "name":
			return d.once(1) && d.string(&v.Name)
		case "vni":
			return d.once(2) && d.uint32(&v.VNI)
		case "cidrs":
			if !d.once(3) {
				return false
			}
			if sc == nil {
				return d.strings(&v.CIDRs)
			}
			ok := d.strings(&sc.cidrs)
			v.CIDRs = sc.cidrs
			return ok
		case "subnets":
			if !d.once(4) {
				return false
			}
			if sc == nil {
				return d.subnets(&v.Subnets)
			}
			ok := d.subnets(&sc.subnets)
			v.Subnets = sc.subnets
			return ok
		}
		return d.unknownField(key, vpcFields)
	})
}

// subnets decodes an array of subnets into (*v)[:0], reusing its storage;
// an empty array gives an empty slice, not nil (as json.Unmarshal).
func (d *fastDecoder) subnets(v *[]Subnet) bool {
	s := (*v)[:0]
	if s == nil {
		s = []Subnet{}
	}
	ok := d.array(func() bool {
		s = append(s, Subnet{})
		sn := &s[len(s)-1]
		return d.object(func(key []byte) bool {
			switch string(key) {
			case "name":
				return d.once(0) && d.string(&sn.Name)
			case "cidr":
				return d.once(1) && d.string(&sn.CIDR)
			case "gateway":
				return d.once(2) && d.string(&sn.Gateway)
			}
			return d.unknownField(key, subnetFields)
		})
	})
	*v = s
	return ok
}

var endpointFields = []string{"tenant", "name", "uid", "vpc", "vni", "subnet", "cidr", "gateway", "ip", "mac",
	"netns", "qosClass", "labels", "identity"}

func fastEndpoint(b []byte, e *Endpoint, sc *scratch) bool {
	d := fastDecoder{b: b}
	return d.document(func(key []byte) bool {
		switch string(key) {
		case "tenant":
			return d.once(0) && d.string(&e.Tenant)
		case "name":
			return d.once(1) && d.string(&e.Name)
		case "uid":
			return d.once(2) && d.string(&e.UID)
		case "vpc":
			return d.once(3) && d.string(&e.VPC)
		case "vni":
			return d.once(4) && d.uint32(&e.VNI)
		case "subnet":
			return d.once(5) && d.string(&e.Subnet)
		case "cidr":
			return d.once(6) && d.string(&e.CIDR)
		case "gateway":
			return d.once(7) && d.string(&e.Gateway)
		case "ip":
			return d.once(8) && d.string(&e.IP)
		case "mac":
			return d.once(9) && d.string(&e.MAC)
		case "netns":
			return d.once(10) && d.string(&e.Netns)
		case "qosClass":
			return d.once(11) && d.string(&e.QoSClass)
		case "labels":
			if !d.once(12) {
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
			return d.once(13) && d.uint32(&e.Identity)
		}
		return d.unknownField(key, endpointFields)
	})
}

var qosFields = []string{"tenant", "name", "minRateBps", "maxRateBps", "priority", "dscp"}

func fastQoS(b []byte, q *QoS) bool {
	d := fastDecoder{b: b}
	return d.document(func(key []byte) bool {
		switch string(key) {
		case "tenant":
			return d.once(0) && d.string(&q.Tenant)
		case "name":
			return d.once(1) && d.string(&q.Name)
		case "minRateBps":
			return d.once(2) && d.uint64(&q.MinRateBps)
		case "maxRateBps":
			return d.once(3) && d.uint64(&q.MaxRateBps)
		case "priority":
			return d.once(4) && d.int(&q.Priority)
		case "dscp":
			return d.once(5) && d.int(&q.DSCP)
		}
		return d.unknownField(key, qosFields)
	})
}
