package registry

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	appintent "github.com/weftnet/weft/controller/intent"
)

// Admission of guaranteed minimum rates. What a host has committed is the
// minRate of the QoSClass of each endpoint on it (the class it names, else
// its AppIntent's: intent.ClassOf, the rule the compiler programs) plus,
// once per VPC with endpoints on it, the VPC's spec.qos.minRate; it must
// not exceed the host's spec.capacity (a Host without capacity admits no
// minimum). A write that raises what some host has committed (an
// endpoint's create, migration, class or label change, a class created
// or its minRate raised, an AppIntent that gives its class to more
// endpoints, a VPC's minRate raised) or lowers a host's capacity is
// refused with 422 if it would not fit; a write that does not raise it is
// not checked, so that a host committed beyond its capacity (lowered
// while it was not checked) still takes endpoints without minimums.
//
// The decision is computed from the cache, and every write that may raise
// what a host has committed bumps one cluster-wide key, admissionKey, in
// its transaction, with a compare that no other such write committed after
// the cache revision the decision read: of two racing writes that each
// fit alone, the second fails its compare and is decided again. Writes
// that cannot raise it (deletes, endpoints without minimums) leave the key
// alone. On a replica such writes take turns (Registry.serialize), so that
// they retry only when another replica wins.

// admissionKey is bumped by every write that may raise a host's
// committed minimums.
const admissionKey = "admission/epoch"

// overrides are the objects a planned write changes, seen in place of the
// cached ones.
type overrides struct {
	ep     *apiv1.Endpoint
	qos    *apiv1.QoSClass
	vpc    *apiv1.VPC
	intent *apiv1.AppIntent
}

// lookup is the cache as a write planned with o would leave it, for
// intent.ClassOf: o.intent in place of the cached AppIntent of its name.
type lookup struct {
	apiv1.Lookup
	intent *apiv1.AppIntent
}

func (l lookup) List(kind, tenant string) []apiv1.Object {
	objs := l.Lookup.List(kind, tenant)
	in := l.intent
	if kind != apiv1.KindAppIntent || in == nil || in.Metadata.Tenant != tenant {
		return objs
	}
	out := make([]apiv1.Object, 0, len(objs)+1)
	for _, o := range objs {
		if o.GetObjectMeta().Name != in.Metadata.Name {
			out = append(out, o)
		}
	}
	i, _ := slices.BinarySearchFunc(out, in.Metadata.Name, func(o apiv1.Object, name string) int {
		return cmp.Compare(o.GetObjectMeta().Name, name)
	})
	return slices.Insert(out, i, apiv1.Object(in))
}

// classOf is the class ep uses with o in place of the cached objects.
func (r *Registry) classOf(ep *apiv1.Endpoint, o overrides) string {
	return appintent.ClassOf(lookup{r.st, o.intent}, ep)
}

// rate parses a validated bandwidth (0 if it does not parse).
func rate(b apiv1.Bandwidth) uint64 {
	bps, _ := b.BitsPerSecond()
	return bps
}

// classMin returns the minRate of a QoSClass ("": none).
func (r *Registry) classMin(tenant, name string, o overrides) uint64 {
	if name == "" {
		return 0
	}
	if q := o.qos; q != nil && q.Metadata.Tenant == tenant && q.Metadata.Name == name {
		return rate(q.Spec.MinRate)
	}
	if q, ok := r.st.Get(apiv1.KindQoSClass, tenant, name); ok {
		return rate(q.(*apiv1.QoSClass).Spec.MinRate)
	}
	return 0
}

// vpcMin returns a VPC's per-host minimum.
func (r *Registry) vpcMin(k vpcKey, o overrides) uint64 {
	v := o.vpc
	if v == nil || v.Metadata.Tenant != k.tenant || v.Metadata.Name != k.vpc {
		cached, ok := r.st.Get(apiv1.KindVPC, k.tenant, k.vpc)
		if !ok {
			return 0
		}
		v = cached.(*apiv1.VPC)
	}
	if v.Spec.QoS == nil {
		return 0
	}
	return rate(v.Spec.QoS.MinRate)
}

// involvesMinimum reports whether ep's class or VPC guarantees a minimum.
func (r *Registry) involvesMinimum(ep *apiv1.Endpoint) bool {
	t := ep.Metadata.Tenant
	if r.classMin(t, r.classOf(ep, overrides{}), overrides{}) > 0 {
		return true
	}
	vpc, ok := r.vpcOfSubnet(t, ep.Spec.Subnet)
	return ok && r.vpcMin(vpcKey{t, vpc}, overrides{}) > 0
}

// committed returns what host has committed, with o in place of the
// cached objects.
func (r *Registry) committed(host string, o overrides) uint64 {
	var sum uint64
	vpcs := map[vpcKey]bool{}
	add := func(ep *apiv1.Endpoint) {
		t := ep.Metadata.Tenant
		sum += r.classMin(t, r.classOf(ep, o), o)
		if vpc, ok := r.vpcOfSubnet(t, ep.Spec.Subnet); ok && !vpcs[vpcKey{t, vpc}] {
			vpcs[vpcKey{t, vpc}] = true
			sum += r.vpcMin(vpcKey{t, vpc}, o)
		}
	}
	for _, ep := range r.st.EndpointsByHost(host) {
		if o.ep == nil || ep.Metadata.Tenant != o.ep.Metadata.Tenant || ep.Metadata.Name != o.ep.Metadata.Name {
			add(ep)
		}
	}
	if o.ep != nil && o.ep.Spec.Host == host {
		add(o.ep)
	}
	return sum
}

// admit refuses the write of ref (planned with o, changing field) if it
// raises what host has committed beyond the host's capacity.
func (r *Registry) admit(host string, o overrides, ref apiv1.Ref, field string) error {
	before, after := r.committed(host, overrides{}), r.committed(host, o)
	if after <= before {
		return nil
	}
	var capacity uint64
	if h, ok := r.st.Get(apiv1.KindHost, "", host); ok {
		capacity = rate(h.(*apiv1.Host).Spec.Capacity)
	}
	if after <= capacity {
		return nil
	}
	msg := fmt.Sprintf("host %s has capacity %s with %s committed: %s more guaranteed minimum does not fit",
		host, formatRate(capacity), formatRate(before), formatRate(after-before))
	if capacity == 0 {
		msg = fmt.Sprintf("host %s has no capacity (spec.capacity) with %s committed: it admits no guaranteed minimum (%s)",
			host, formatRate(before), formatRate(after-before))
	}
	return apiv1.NewInvalid(ref, []apiv1.FieldError{{Field: field, Message: msg}})
}

// admitCapacity refuses a Host update that lowers its capacity below what
// it has committed.
func (r *Registry) admitCapacity(old, next *apiv1.Host) error {
	capacity := rate(next.Spec.Capacity)
	if capacity >= rate(old.Spec.Capacity) {
		return nil
	}
	if c := r.committed(next.Metadata.Name, overrides{}); c > capacity {
		return apiv1.NewInvalid(apiv1.RefOf(next), []apiv1.FieldError{{Field: "spec.capacity", Message: fmt.Sprintf(
			"host %s has %s of guaranteed minimums committed, more than a capacity of %s", next.Metadata.Name, formatRate(c), formatRate(capacity))}})
	}
	return nil
}

// admitOnHosts runs admit on every host of eps.
func (r *Registry) admitOnHosts(eps []*apiv1.Endpoint, o overrides, ref apiv1.Ref, field string) error {
	seen := map[string]bool{}
	for _, ep := range eps {
		if h := ep.Spec.Host; !seen[h] {
			seen[h] = true
			if err := r.admit(h, o, ref, field); err != nil {
				return err
			}
		}
	}
	return nil
}

// planAdmission makes a's transaction conditional on no write that may
// raise a host's committed minimums since cacheRev, and bumps the key
// that records them.
func (r *Registry) planAdmission(a *attempt, cacheRev int64) {
	k := r.st.Key(admissionKey)
	a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.ModRevision(k), "<", cacheRev+1))
	a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(k, ""))
}

// admitWrite checks a create (oldObj nil) or update of a QoSClass or
// AppIntent, or an update of a VPC or Host, that may raise what hosts have
// committed, and if so plans the admission.
func (r *Registry) admitWrite(a *attempt, oldObj, next apiv1.Object, cacheRev int64) error {
	var err error
	switch n := next.(type) {
	case *apiv1.QoSClass:
		old, _ := oldObj.(*apiv1.QoSClass)
		if old == nil && rate(n.Spec.MinRate) == 0 || old != nil && rate(n.Spec.MinRate) <= rate(old.Spec.MinRate) {
			return nil
		}
		var eps []*apiv1.Endpoint
		for _, o := range r.st.List(apiv1.KindEndpoint, n.Metadata.Tenant) {
			if ep := o.(*apiv1.Endpoint); r.classOf(ep, overrides{}) == n.Metadata.Name {
				eps = append(eps, ep)
			}
		}
		err = r.admitOnHosts(eps, overrides{qos: n}, apiv1.RefOf(n), "spec.minRate")
	case *apiv1.AppIntent:
		if !appintent.WantsClass(n) {
			return nil
		}
		// The endpoints whose class the intent may change: those of its VPC.
		var eps []*apiv1.Endpoint
		for _, sn := range r.st.SubnetsByVPC(n.Metadata.Tenant, n.Spec.VPC) {
			eps = append(eps, r.st.EndpointsBySubnet(n.Metadata.Tenant, sn.Metadata.Name)...)
		}
		err = r.admitOnHosts(eps, overrides{intent: n}, apiv1.RefOf(n), "spec.selector")
	case *apiv1.VPC:
		if oldObj == nil {
			return nil
		}
		if r.vpcMin(vpcKey{n.Metadata.Tenant, n.Metadata.Name}, overrides{vpc: n}) <= r.vpcMin(vpcKey{n.Metadata.Tenant, n.Metadata.Name}, overrides{vpc: oldObj.(*apiv1.VPC)}) {
			return nil
		}
		var eps []*apiv1.Endpoint
		for _, sn := range r.st.SubnetsByVPC(n.Metadata.Tenant, n.Metadata.Name) {
			eps = append(eps, r.st.EndpointsBySubnet(n.Metadata.Tenant, sn.Metadata.Name)...)
		}
		err = r.admitOnHosts(eps, overrides{vpc: n}, apiv1.RefOf(n), "spec.qos.minRate")
	case *apiv1.Host:
		old, _ := oldObj.(*apiv1.Host)
		if old == nil || rate(n.Spec.Capacity) >= rate(old.Spec.Capacity) {
			return nil
		}
		err = r.admitCapacity(old, n)
	default:
		return nil
	}
	if err == nil {
		r.planAdmission(a, cacheRev)
	}
	return err
}

// mayNeedAdmission reports whether a create or update of obj may raise
// what a host has committed (or lower its capacity), judged from the
// request and the cache before planning: such writes take turns on this
// replica (see serialize).
func (r *Registry) mayNeedAdmission(obj apiv1.Object, create bool) bool {
	switch o := obj.(type) {
	case *apiv1.Endpoint:
		return r.involvesMinimum(o)
	case *apiv1.QoSClass:
		return rate(o.Spec.MinRate) > 0
	case *apiv1.AppIntent:
		return appintent.WantsClass(o)
	case *apiv1.VPC:
		return !create && o.Spec.QoS != nil && rate(o.Spec.QoS.MinRate) > 0
	case *apiv1.Host:
		return !create
	}
	return false
}

// formatRate writes a rate in the largest decimal unit that keeps it exact
// ("950Mbit", "1500Mbit", "10Gbit").
func formatRate(bps uint64) string {
	if bps == 0 {
		return "0"
	}
	for _, u := range []struct {
		div  uint64
		unit string
	}{{1e12, "Tbit"}, {1e9, "Gbit"}, {1e6, "Mbit"}, {1e3, "kbit"}} {
		if bps >= u.div && bps%u.div == 0 {
			return strconv.FormatUint(bps/u.div, 10) + u.unit
		}
	}
	return strconv.FormatUint(bps, 10) + "bit"
}

// serialize makes the writes of obj that may need admission, and the
// counted creates of a tenant with a quota, take turns on this replica
// (tenant first, then admission), and returns how many attempts the write
// may take: such writes retry when another replica's wins.
func (r *Registry) serialize(ctx context.Context, obj apiv1.Object, create bool) (unlock func(), attempts int, err error) {
	var keys []string
	if k := r.quotaLock(obj, create); k != "" {
		keys = append(keys, k)
	}
	if r.mayNeedAdmission(obj, create) {
		keys = append(keys, admissionKey)
	}
	var unlocks []func()
	unlock = func() {
		for _, u := range slices.Backward(unlocks) {
			u()
		}
	}
	for _, k := range keys {
		u, err := r.writeLocks.lock(ctx, k)
		if err != nil {
			unlock()
			return nil, 0, storeError(err)
		}
		unlocks = append(unlocks, u)
	}
	if len(keys) == 0 {
		return unlock, maxAttempts, nil
	}
	return unlock, admissionAttempts, nil
}
