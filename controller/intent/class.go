package intent

import apiv1 "github.com/weftnet/weft/api/v1"

// ClassOf returns the name of the QoSClass that an endpoint uses, or ""
// for none. It is the one rule for the compiler (which class a host
// programs for the endpoint), admission (whose minRate the endpoint
// commits on its host) and the intent controller (which needs are unmet):
//
//   - the class the endpoint names in spec.qosClass, if any: an endpoint's
//     own choice wins;
//   - else the class of the first AppIntent, by name, of its tenant and
//     VPC that selects it and states a QoS need (WantsClass): Name(intent).
//
// The rule depends only on the endpoint, its subnet's VPC and the tenant's
// AppIntents, not on whether the class exists yet: a class that does not
// exist (not written yet, or refused by admission) gives no QoS and
// commits no minimum. Intents are few per tenant; l.List is the store's
// sorted, cached list.
func ClassOf(l apiv1.Lookup, ep *apiv1.Endpoint) string {
	if ep.Spec.QoSClass != "" {
		return ep.Spec.QoSClass
	}
	if in := classIntent(l, ep); in != nil {
		return Name(in.Metadata.Name)
	}
	return ""
}

// classIntent returns the AppIntent whose class ep uses when it names
// none itself (see ClassOf), or nil.
func classIntent(l apiv1.Lookup, ep *apiv1.Endpoint) *apiv1.AppIntent {
	t := ep.Metadata.Tenant
	intents := l.List(apiv1.KindAppIntent, t)
	if len(intents) == 0 {
		return nil
	}
	sn, ok := l.Get(apiv1.KindSubnet, t, ep.Spec.Subnet)
	if !ok {
		return nil
	}
	vpc := sn.(*apiv1.Subnet).Spec.VPC
	for _, o := range intents {
		in := o.(*apiv1.AppIntent)
		if in.Spec.VPC == vpc && WantsClass(in) && in.Spec.Selector.Matches(ep.Metadata.Labels) {
			return in
		}
	}
	return nil
}
