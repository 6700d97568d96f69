package compile

import (
	"slices"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/view"
	"github.com/weftnet/weft/wire"
)

// tn names a tenant's object (a VPC, a policy, a QoS class).
type tn struct{ tenant, name string }

// deps are the objects a host's view was built from, beyond its Host and
// its endpoints: the reverse indexes map them back to the host.
type deps struct {
	vpcs     []tn
	policies []tn
	qos      []tn
}

// build computes the resources of host's view from the store's cache. It
// only reads shared state (and makes the VPC indexes and compiled
// policies it needs, under their locks), so several builds may run at
// once.
func (c *Compiler) build(host string) (map[wire.ResourceKey]encoded, deps) {
	eps := c.st.EndpointsByHost(host)
	// Sized for the host, its endpoints, and about as many VPCs and
	// policies: growing it was a good part of a cold start's garbage.
	out := make(map[wire.ResourceKey]encoded, 1+3*len(eps))
	var d deps
	if o, ok := c.st.Get(apiv1.KindHost, "", host); ok {
		h := o.(*apiv1.Host)
		capBps, err := h.Spec.Capacity.BitsPerSecond()
		if err != nil {
			c.log.Warn("host capacity unparsable, using 0", "host", host, "capacity", h.Spec.Capacity, "err", err)
		}
		c.put(out, &view.Host{Name: host, HostID: h.Status.HostID, UnderlayIP: h.Spec.UnderlayIP, CapacityBps: capBps})
	}
	local := map[tn][]*apiv1.Endpoint{} // VPC → its endpoints here, sorted by name
	c.observeResources(host, eps, out)
	for _, ep := range eps {
		t := ep.Metadata.Tenant
		class := ep.Spec.QoSClass
		if c.cfg.ClassOf != nil {
			class = c.cfg.ClassOf(c.st, ep)
		}
		if class != "" && !slices.Contains(d.qos, tn{t, class}) {
			d.qos = append(d.qos, tn{t, class})
		}
		o, ok := c.st.Get(apiv1.KindSubnet, t, ep.Spec.Subnet)
		if !ok {
			// Not programmable yet; the subnet's creation precedes any
			// endpoint in it, so its event will arrive.
			c.log.Debug("endpoint without subnet skipped", "host", host, "tenant", t, "endpoint", ep.Metadata.Name, "subnet", ep.Spec.Subnet)
			continue
		}
		sn := o.(*apiv1.Subnet)
		vk := tn{t, sn.Spec.VPC}
		if !slices.Contains(d.vpcs, vk) {
			d.vpcs = append(d.vpcs, vk)
		}
		o, ok = c.st.Get(apiv1.KindVPC, t, sn.Spec.VPC)
		if !ok {
			c.log.Debug("endpoint without vpc skipped", "host", host, "tenant", t, "endpoint", ep.Metadata.Name, "vpc", sn.Spec.VPC)
			continue
		}
		vpc := o.(*apiv1.VPC)
		if r, ok := c.vpcResource(vk, vpc); ok {
			out[r.Key] = encoded{data: r.Data}
		}
		local[vk] = append(local[vk], ep)
		vni := vpc.Status.VNI
		if vni == 0 {
			vni = ep.Status.VNI
		}
		c.put(out, &view.Endpoint{
			Tenant:     t,
			Name:       ep.Metadata.Name,
			UID:        ep.Metadata.UID,
			VPC:        vpc.Metadata.Name,
			VNI:        vni,
			Subnet:     sn.Metadata.Name,
			CIDR:       sn.Spec.CIDR,
			Gateway:    sn.Spec.Gateway,
			IP:         ep.Status.IP,
			MAC:        ep.Status.MAC,
			Netns:      ep.Spec.Netns,
			QoSClass:   class,
			Labels:     ep.Metadata.Labels,
			Identity:   ep.Status.Identity,
			Generation: ep.Metadata.Generation,
		})
	}
	for _, vk := range d.vpcs {
		x := c.index(vk)
		if len(x.policies) == 0 {
			continue
		}
		c.ensureMembers(x)
		var sel selections
		for _, ep := range local[vk] {
			var id string
			for _, name := range x.selecting(ep) {
				if id == "" {
					id = view.ID(vk.tenant, ep.Metadata.Name)
				}
				sel.add(name, id)
			}
		}
		for _, s := range sel.list {
			pe := x.policies[s.name]
			d.policies = append(d.policies, tn{vk.tenant, s.name})
			out[wire.ResourceKey{Type: view.TypePolicy, ID: pe.id}] = encoded{c.compiledPolicy(x, pe), policyTail(s.applies)}
		}
	}
	for _, q := range d.qos {
		o, ok := c.st.Get(apiv1.KindQoSClass, q.tenant, q.name)
		if !ok {
			continue
		}
		c.put(out, c.qosView(o.(*apiv1.QoSClass)))
	}
	return out, d
}

// selections are the policies of a VPC that select local endpoints, and
// those endpoints ("tenant/name", sorted), in the order first seen. A
// host holds a few of a VPC's policies: they are kept in a list, with a
// map to find them only once there are many.
type selections struct {
	list  []selection
	index map[string]int // into list, once it is long
}

type selection struct {
	name    string
	applies []string
}

// add records that policy name selects endpoint id.
func (s *selections) add(name, id string) {
	i := -1
	if s.index != nil {
		if j, ok := s.index[name]; ok {
			i = j
		}
	} else {
		i = slices.IndexFunc(s.list, func(e selection) bool { return e.name == name })
	}
	if i < 0 {
		i = len(s.list)
		s.list = append(s.list, selection{name: name})
		if s.index != nil {
			s.index[name] = i
		} else if len(s.list) > 16 {
			s.index = make(map[string]int, 2*len(s.list))
			for j, e := range s.list {
				s.index[e.name] = j
			}
		}
	}
	s.list[i].applies = append(s.list[i].applies, id)
}

func (c *Compiler) qosView(q *apiv1.QoSClass) *view.QoS {
	v := &view.QoS{Tenant: q.Metadata.Tenant, Name: q.Metadata.Name, Priority: apiv1.DefaultPriority, DSCP: q.Spec.DSCP}
	var err error
	if v.MinRateBps, err = q.Spec.MinRate.BitsPerSecond(); err != nil {
		c.log.Warn("qos minRate unparsable, using 0", "tenant", v.Tenant, "qos", v.Name, "err", err)
	}
	if v.MaxRateBps, err = q.Spec.MaxRate.BitsPerSecond(); err != nil {
		c.log.Warn("qos maxRate unparsable, using 0", "tenant", v.Tenant, "qos", v.Name, "err", err)
	}
	if q.Spec.Priority != nil {
		v.Priority = *q.Spec.Priority
	}
	return v
}

// vpcResource returns the encoded view.VPC of a VPC with all its subnets.
// Encodings are cached until the VPC or one of its subnets changes, so that
// every host's view shares one copy of the bytes.
func (c *Compiler) vpcResource(k tn, vpc *apiv1.VPC) (wire.Resource, bool) {
	c.vpcMu.Lock()
	r, ok := c.vpcCache[k]
	c.vpcMu.Unlock()
	if ok {
		return r, true
	}
	v := &view.VPC{Tenant: k.tenant, Name: k.name, VNI: vpc.Status.VNI, CIDRs: vpc.Spec.CIDRs, Subnets: []view.Subnet{},
		DefaultDeny: vpc.Spec.DefaultPolicy == apiv1.DefaultPolicyDeny}
	if q := vpc.Spec.QoS; q != nil {
		var err error
		if v.MaxRateBps, err = q.MaxRate.BitsPerSecond(); err != nil {
			c.log.Warn("vpc qos maxRate unparsable, using 0", "tenant", k.tenant, "vpc", k.name, "err", err)
		}
		if v.MinRateBps, err = q.MinRate.BitsPerSecond(); err != nil {
			c.log.Warn("vpc qos minRate unparsable, using 0", "tenant", k.tenant, "vpc", k.name, "err", err)
		}
	}
	for _, sn := range c.st.SubnetsByVPC(k.tenant, k.name) {
		v.Subnets = append(v.Subnets, view.Subnet{Name: sn.Metadata.Name, CIDR: sn.Spec.CIDR, Gateway: sn.Spec.Gateway})
	}
	r, err := view.Encode(v)
	if err != nil { // cannot happen: view structs always encode
		c.log.Error("encode vpc view", "tenant", k.tenant, "vpc", k.name, "err", err)
		return wire.Resource{}, false
	}
	c.vpcMu.Lock()
	c.vpcCache[k] = r
	c.vpcMu.Unlock()
	return r, true
}

// forgetVPC drops a VPC's cached encoding after it or a subnet changed.
func (c *Compiler) forgetVPC(k tn) {
	c.vpcMu.Lock()
	delete(c.vpcCache, k)
	c.vpcMu.Unlock()
}

// put encodes a view resource into out.
func (c *Compiler) put(out map[wire.ResourceKey]encoded, v any) {
	r, err := view.Encode(v)
	if err != nil { // cannot happen: view structs always encode
		c.log.Error("encode view resource", "err", err)
		return
	}
	out[r.Key] = encoded{data: r.Data}
}
