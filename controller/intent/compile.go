package intent

import (
	"encoding/json"
	"slices"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Prefix starts the name of every object an AppIntent owns: the intent
// "shop" owns SecurityPolicy and QoSClass "appintent-shop". Objects of
// those names belong to the intent of that name (see package doc).
const Prefix = "appintent-"

// Name returns the name of the objects the AppIntent named intent owns.
func Name(intent string) string { return Prefix + intent }

// The class a latency need compiles to: low latency is the highest
// priority and DSCP EF; normal is what an endpoint without class gets.
const (
	lowLatencyPriority = 0
	lowLatencyDSCP     = 46 // EF, RFC 3246
)

// WantsClass reports whether an intent states a QoS need (a bandwidth rate
// or low latency), so that it owns a QoSClass. Normal latency alone is the
// default and needs no class.
func WantsClass(in *apiv1.AppIntent) bool {
	b := in.Spec.Bandwidth
	return b != nil && (b.Min != "" || b.Max != "") || in.Spec.Latency == apiv1.LatencyLow
}

// wantsPolicy reports whether an intent constrains traffic, so that it
// owns a SecurityPolicy.
func wantsPolicy(in *apiv1.AppIntent) bool {
	return len(in.Spec.TalksTo) > 0 || len(in.Spec.Exposes) > 0
}

// Compile returns the objects an intent compiles to, in its tenant, each
// owned by it (metadata.ownerReferences: the intent's kind, name and uid)
// and defaulted as the registry stores them:
//
//   - with talksTo or exposes, a SecurityPolicy selecting the intent's
//     endpoints in its VPC: talksTo[i] is egress[i] (its peer and ports),
//     exposes[i] is ingress[i] (its from and ports), so that each listed
//     need isolates its direction and an absent one leaves it alone;
//   - with a bandwidth rate or low latency, a QoSClass: minRate and maxRate
//     from bandwidth, priority 0 and DSCP 46 (EF) for low latency, else
//     priority 4 and DSCP 0.
//
// The objects share nothing with in.
func Compile(in *apiv1.AppIntent) []apiv1.Object {
	m := in.Metadata
	meta := func() apiv1.ObjectMeta {
		return apiv1.ObjectMeta{Name: Name(m.Name), Tenant: m.Tenant,
			OwnerReferences: []apiv1.OwnerReference{{Kind: apiv1.KindAppIntent, Name: m.Name, UID: m.UID}}}
	}
	var out []apiv1.Object
	if wantsPolicy(in) {
		s := in.Spec
		p := &apiv1.SecurityPolicy{Metadata: meta(), Spec: apiv1.SecurityPolicySpec{VPC: s.VPC, Selector: s.Selector}}
		for _, d := range s.TalksTo {
			p.Spec.Egress = append(p.Spec.Egress, apiv1.PolicyRule{Peers: []apiv1.PolicyPeer{d.PolicyPeer}, Ports: d.Ports})
		}
		for _, e := range s.Exposes {
			p.Spec.Ingress = append(p.Spec.Ingress, apiv1.PolicyRule{Peers: e.From, Ports: e.Ports})
		}
		p.Spec = deepCopy(p.Spec)
		out = append(out, p)
	}
	if WantsClass(in) {
		q := &apiv1.QoSClass{Metadata: meta()}
		if b := in.Spec.Bandwidth; b != nil {
			q.Spec.MinRate, q.Spec.MaxRate = b.Min, b.Max
		}
		prio := apiv1.DefaultPriority
		if in.Spec.Latency == apiv1.LatencyLow {
			prio, q.Spec.DSCP = lowLatencyPriority, lowLatencyDSCP
		}
		q.Spec.Priority = &prio
		out = append(out, q)
	}
	for _, o := range out {
		apiv1.Default(o)
	}
	return out
}

// deepCopy copies a spec through its JSON form: the copy shares no map,
// slice or pointer with v (Default rewrites slices in place).
func deepCopy[T any](v T) T {
	b, err := json.Marshal(v)
	if err != nil {
		panic("intent: encode a spec: " + err.Error()) // API specs always encode
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		panic("intent: decode a spec: " + err.Error())
	}
	return out
}

// inStep reports whether a stored object is what desired asks for: the
// same kind, spec and owner references. Labels and annotations are the
// user's to keep.
func inStep(stored, desired apiv1.Object) bool {
	if stored.GetTypeMeta().Kind != desired.GetTypeMeta().Kind ||
		!slices.Equal(stored.GetObjectMeta().OwnerReferences, desired.GetObjectMeta().OwnerReferences) {
		return false
	}
	a, errA := json.Marshal(specOf(stored))
	b, errB := json.Marshal(specOf(desired))
	return errA == nil && errB == nil && string(a) == string(b)
}

// specOf returns the spec of a SecurityPolicy or QoSClass, else nil.
func specOf(o apiv1.Object) any {
	switch o := o.(type) {
	case *apiv1.SecurityPolicy:
		return o.Spec
	case *apiv1.QoSClass:
		return o.Spec
	}
	return nil
}
