package v1

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Lookup gives validation read access to other objects (the controller's
// index implements it).
type Lookup interface {
	// Get returns the object of kind named name in tenant ("" for
	// cluster-scoped kinds).
	Get(kind, tenant, name string) (Object, bool)
	// List returns all objects of kind in tenant ("" for cluster-scoped).
	List(kind, tenant string) []Object
}

// Limits checked by validation. They bound the work one object can cost
// the controller and every agent it reaches; errors name the field and the
// limit.
const (
	MaxDescriptionLen  = 1024 // Tenant spec.description, in characters
	MaxPriority        = 7    // QoSClass spec.priority: 0 (highest) .. 7 (lowest)
	MaxDSCP            = 63
	MaxPort            = 65535
	MaxICMPTypeOrCode  = 255
	MaxLabels          = 64        // metadata.labels entries
	MaxAnnotations     = 64        // metadata.annotations entries
	MaxAnnotationsSize = 256 << 10 // bytes of annotation keys and values together
	MaxOwnerReferences = 16
	// MaxRules is the limit on a SecurityPolicy's rules per direction, and
	// on an AppIntent's talksTo and exposes entries.
	MaxRules = 1000
	MaxPeers = 100 // per rule (an AppIntent exposure's from)
	MaxPorts = 100 // per rule (an AppIntent destination or exposure)
	// MaxSelectorRequirements limits a selector's matchLabels entries and
	// matchExpressions together; MaxSelectorValues the values of one
	// requirement.
	MaxSelectorRequirements = 32
	MaxSelectorValues       = 64
)

// Policy port protocols; Default upper-cases them.
const (
	ProtocolTCP  = "TCP"
	ProtocolUDP  = "UDP"
	ProtocolSCTP = "SCTP"
	ProtocolICMP = "ICMP"
)

// Messages shared by several rules, exported so that callers and tests can
// recognise them.
const (
	MsgRequired  = "is required"
	MsgImmutable = "field is immutable"
	// MsgIPv6 refuses IPv6 ranges: the data plane does not carry IPv6 yet,
	// and a range it cannot program is refused here rather than left to
	// fail on a host.
	MsgIPv6 = "IPv6 is not supported by the data plane yet"
)

// ValidateObject runs the checks that need nothing but o itself: syntax of
// names, labels, addresses and rates, ranges, and consistency inside the
// object. o should have been defaulted (see Default). It returns every
// problem found, in field order.
func ValidateObject(o Object) []FieldError {
	var v fieldErrors
	v.meta(o)
	switch o := o.(type) {
	case *Tenant:
		if n := utf8.RuneCountInString(o.Spec.Description); n > MaxDescriptionLen {
			v.add("spec.description", fmt.Sprintf("must be at most %d characters, got %d", MaxDescriptionLen, n))
		}
		if q := o.Spec.Quota; q != nil {
			v.nonNegative("spec.quota.endpoints", q.Endpoints, " (0 means unlimited)")
			v.nonNegative("spec.quota.vpcs", q.VPCs, " (0 means unlimited)")
			v.nonNegative("spec.quota.policies", q.Policies, " (0 means unlimited)")
		}
	case *Host:
		v.host(o)
	case *VPC:
		v.vpc(o)
	case *Subnet:
		v.subnet(o)
	case *Endpoint:
		v.endpoint(o)
	case *SecurityPolicy:
		v.policy(o)
	case *QoSClass:
		v.qos(o)
	case *AppIntent:
		v.appIntent(o)
	case *Trace:
		v.trace(o)
	case *Capture:
		v.capture(o)
	}
	return v
}

// ValidateCreate validates an object about to be created: ValidateObject
// plus the checks that read other objects through l (the tenant and every
// referenced object exist, a subnet lies inside its VPC and overlaps no
// sibling, an endpoint's address lies inside its subnet, a policy or
// intent without spec.vpc is in a tenant with exactly one VPC). A nil l skips the
// reference checks. It returns nil or a *StatusError with ReasonInvalid
// whose Causes list every problem.
func ValidateCreate(o Object, l Lookup) error {
	v := fieldErrors(ValidateObject(o))
	if l != nil {
		v.refs(o, l)
	}
	return v.err(o)
}

// ValidateUpdate validates newObj replacing oldObj: everything
// ValidateCreate checks, plus immutability (names, a subnet's vpc and
// cidr, an endpoint's subnet and, once set, its ip). An endpoint's host may
// change: that is a migration.
func ValidateUpdate(newObj, oldObj Object, l Lookup) error {
	if kindOf(newObj) != kindOf(oldObj) {
		return NewInvalid(RefOf(newObj), []FieldError{{Field: "kind", Message: MsgImmutable}})
	}
	v := fieldErrors(ValidateObject(newObj))
	v.immutable(newObj, oldObj)
	if l != nil {
		v.refs(newObj, l)
		if nv, ok := newObj.(*VPC); ok {
			v.vpcKeepsSubnets(nv, l)
		}
	}
	return v.err(newObj)
}

// fieldErrors collects field errors.
type fieldErrors []FieldError

func (v *fieldErrors) add(field, msg string) {
	*v = append(*v, FieldError{Field: field, Message: msg})
}

func (v *fieldErrors) addAll(errs []FieldError) { *v = append(*v, errs...) }

// tooMany reports a list of n items at field that is longer than limit,
// and says so: the caller then skips checking the items, so that the work
// and the error stay bounded.
func (v *fieldErrors) tooMany(field string, n, limit int, what string) bool {
	if n <= limit {
		return false
	}
	v.add(field, fmt.Sprintf("must have at most %d %s, got %d", limit, what, n))
	return true
}

func (v *fieldErrors) nonNegative(field string, n int, note string) {
	if n < 0 {
		v.add(field, "must not be negative"+note)
	}
}

func (v fieldErrors) err(o Object) error {
	if len(v) == 0 {
		return nil
	}
	return NewInvalid(RefOf(o), v)
}

// name checks an object name (or a reference to one) at field; empty is
// reported only when required.
func (v *fieldErrors) name(field, s string, required bool) {
	if s == "" && !required {
		return
	}
	if msg := nameError(s); msg != "" {
		v.add(field, msg)
	}
}

func (v *fieldErrors) meta(o Object) {
	tm, m := o.GetTypeMeta(), o.GetObjectMeta()
	kind := kindOf(o)
	if tm.APIVersion != APIVersion {
		v.add("apiVersion", fmt.Sprintf("must be %q", APIVersion))
	}
	if tm.Kind != kind {
		v.add("kind", fmt.Sprintf("must be %q", kind))
	}
	v.name("metadata.name", m.Name, true)
	if namespaced(kind) {
		v.name("metadata.tenant", m.Tenant, true)
	} else if m.Tenant != "" {
		v.add("metadata.tenant", "must not be set for cluster-scoped kind "+kind)
	}
	if !v.tooMany("metadata.labels", len(m.Labels), MaxLabels, "labels") {
		v.addAll(validateLabels("metadata.labels", m.Labels))
	}
	v.annotations(m.Annotations)
	v.owners(kind, m.OwnerReferences)
}

func (v *fieldErrors) annotations(a map[string]string) {
	if v.tooMany("metadata.annotations", len(a), MaxAnnotations, "annotations") {
		return
	}
	size := 0
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if msg := labelKeyError(k); msg != "" {
			v.add("metadata.annotations["+k+"]", strings.Replace(msg, "label key", "annotation key", 1))
		}
		size += len(k) + len(a[k])
	}
	if size > MaxAnnotationsSize {
		v.add("metadata.annotations", fmt.Sprintf("keys and values must total at most %d bytes, got %d", MaxAnnotationsSize, size))
	}
}

func (v *fieldErrors) owners(kind string, refs []OwnerReference) {
	if v.tooMany("metadata.ownerReferences", len(refs), MaxOwnerReferences, "owner references") {
		return
	}
	for i, r := range refs {
		f := "metadata.ownerReferences[" + strconv.Itoa(i) + "]"
		switch k, ok := LookupKind(r.Kind); {
		case r.Kind == "":
			v.add(f+".kind", MsgRequired)
		case !ok || k.Kind != r.Kind:
			v.add(f+".kind", fmt.Sprintf("unknown kind %q", r.Kind))
		case k.Namespaced && !namespaced(kind):
			// A cluster-scoped object has no tenant to find the owner in.
			v.add(f+".kind", fmt.Sprintf("must be a cluster-scoped kind: %s is tenant-scoped and %s is not", r.Kind, kind))
		}
		v.name(f+".name", r.Name, true)
		if r.UID == "" {
			v.add(f+".uid", MsgRequired)
		}
		for j := range i {
			if refs[j].Kind == r.Kind && refs[j].Name == r.Name {
				v.add(f, fmt.Sprintf("duplicate of metadata.ownerReferences[%d]", j))
				break
			}
		}
	}
}

func namespaced(kind string) bool {
	k, ok := LookupKind(kind)
	return ok && k.Namespaced
}

func (v *fieldErrors) host(o *Host) {
	if o.Spec.UnderlayIP == "" {
		v.add("spec.underlayIP", MsgRequired)
	} else if _, msg := parseUnicast(o.Spec.UnderlayIP); msg != "" {
		v.add("spec.underlayIP", msg)
	}
	if _, err := o.Spec.Capacity.BitsPerSecond(); err != nil {
		v.add("spec.capacity", err.Error())
	}
}

func (v *fieldErrors) vpc(o *VPC) {
	if len(o.Spec.CIDRs) == 0 {
		v.add("spec.cidrs", "at least one CIDR is required")
	}
	valid := make([]netip.Prefix, len(o.Spec.CIDRs)) // zero where invalid
	for i, s := range o.Spec.CIDRs {
		field := "spec.cidrs[" + strconv.Itoa(i) + "]"
		p, msg := parseCIDR(s)
		if msg == "" && (p.Bits() < 8 || p.Bits() > 30) {
			msg = "IPv4 prefix length must be between /8 and /30"
		}
		if msg != "" {
			v.add(field, msg)
			continue
		}
		for j := range i {
			if valid[j].IsValid() && valid[j].Overlaps(p) {
				v.add(field, fmt.Sprintf("overlaps %s (spec.cidrs[%d])", valid[j], j))
				break
			}
		}
		valid[i] = p
	}
	switch o.Spec.DefaultPolicy {
	case "", DefaultPolicyAllow, DefaultPolicyDeny:
	default:
		v.add("spec.defaultPolicy", fmt.Sprintf("unknown default policy %q, want %s or %s", o.Spec.DefaultPolicy, DefaultPolicyAllow, DefaultPolicyDeny))
	}
	if q := o.Spec.QoS; q != nil {
		v.rates("spec.qos.minRate", q.MinRate, "spec.qos.maxRate", q.MaxRate)
	}
}

func (v *fieldErrors) subnet(o *Subnet) {
	v.name("spec.vpc", o.Spec.VPC, true)
	if o.Spec.CIDR == "" {
		v.add("spec.cidr", MsgRequired)
		return
	}
	p, msg := parseCIDR(o.Spec.CIDR)
	if msg == "" && p.Bits() > 30 {
		msg = "IPv4 prefix length must be at most /30 (2 usable addresses)"
	}
	if msg != "" {
		v.add("spec.cidr", msg)
		return
	}
	if o.Spec.Gateway == "" {
		v.add("spec.gateway", MsgRequired+" (Default sets it to the first address of spec.cidr)")
		return
	}
	gw, msg := parseUnicast(o.Spec.Gateway)
	switch {
	case msg != "":
	case !p.Contains(gw):
		msg = "must be inside spec.cidr " + p.String()
	case gw == p.Addr():
		msg = "must not be the network address of spec.cidr"
	case p.Addr().Is4() && gw == lastAddr(p):
		msg = "must not be the broadcast address of spec.cidr"
	}
	if msg != "" {
		v.add("spec.gateway", msg)
	}
}

func (v *fieldErrors) endpoint(o *Endpoint) {
	s := o.Spec
	v.name("spec.subnet", s.Subnet, true)
	v.name("spec.host", s.Host, true)
	if s.IP != "" {
		if _, msg := parseUnicast(s.IP); msg != "" {
			v.add("spec.ip", msg)
		}
	}
	if s.MAC != "" {
		if msg := macError(s.MAC); msg != "" {
			v.add("spec.mac", msg)
		}
	}
	if s.Netns != "" && (!path.IsAbs(s.Netns) || strings.ContainsRune(s.Netns, 0)) {
		v.add("spec.netns", "must be an absolute path such as /var/run/netns/x or /proc/PID/ns/net")
	}
	v.name("spec.qosClass", s.QoSClass, false)
}

func macError(s string) string {
	hw, err := net.ParseMAC(s)
	switch {
	case err != nil || len(hw) != 6:
		return "must be a 48-bit MAC address such as 02:00:0a:00:01:0a"
	case hw[0]&1 != 0:
		return "must be a unicast MAC (the least significant bit of the first octet clear)"
	case [6]byte(hw) == [6]byte{}:
		return "must not be all zeros"
	}
	return ""
}

func (v *fieldErrors) policy(o *SecurityPolicy) {
	v.name("spec.vpc", o.Spec.VPC, false)
	v.addAll(o.Spec.Selector.Validate("spec.selector"))
	v.rules("spec.ingress", o.Spec.Ingress)
	v.rules("spec.egress", o.Spec.Egress)
}

func (v *fieldErrors) rules(field string, rules []PolicyRule) {
	each(v, field, rules, MaxRules, "rules", func(f string, r PolicyRule) {
		each(v, f+".peers", r.Peers, MaxPeers, "peers", v.peer)
		each(v, f+".ports", r.Ports, MaxPorts, "ports", v.port)
	})
}

// each checks every item of a list at field, unless the list is longer
// than limit: then it says so once (see tooMany).
func each[T any](v *fieldErrors, field string, items []T, limit int, what string, check func(field string, item T)) {
	if v.tooMany(field, len(items), limit, what) {
		return
	}
	for i, it := range items {
		check(field+"["+strconv.Itoa(i)+"]", it)
	}
}

func (v *fieldErrors) peer(field string, peer PolicyPeer) {
	switch {
	case (peer.Selector == nil) == (peer.CIDR == ""):
		v.add(field, "must set exactly one of selector or cidr")
	case peer.Selector != nil:
		v.addAll(peer.Selector.Validate(field + ".selector"))
	default:
		if _, msg := parseCIDR(peer.CIDR); msg != "" {
			v.add(field+".cidr", msg)
		}
	}
}

func (v *fieldErrors) port(field string, p PolicyPort) {
	proto := strings.ToUpper(p.Protocol)
	if proto == ProtocolICMP {
		if p.Port != 0 || p.EndPort != 0 {
			v.add(field+".port", "must not be set for protocol ICMP")
		}
		v.icmp(field+".icmpType", p.ICMPType)
		if p.ICMPCode != nil && p.ICMPType == nil {
			v.add(field+".icmpCode", "requires icmpType")
		} else {
			v.icmp(field+".icmpCode", p.ICMPCode)
		}
		return
	}
	switch proto {
	case "", ProtocolTCP, ProtocolUDP, ProtocolSCTP:
	default:
		v.add(field+".protocol", fmt.Sprintf("unknown protocol %q, want one of TCP, UDP, SCTP, ICMP", p.Protocol))
	}
	if p.Port < 0 || p.Port > MaxPort {
		v.add(field+".port", fmt.Sprintf("must be between 0 and %d", MaxPort))
	}
	switch {
	case p.EndPort == 0:
	case p.Port == 0:
		v.add(field+".endPort", "requires port")
	case p.EndPort > MaxPort:
		v.add(field+".endPort", fmt.Sprintf("must be between 0 and %d", MaxPort))
	case p.EndPort < p.Port:
		v.add(field+".endPort", fmt.Sprintf("must be at least port (%d)", p.Port))
	}
	if p.ICMPType != nil {
		v.add(field+".icmpType", "must only be set for protocol ICMP")
	}
	if p.ICMPCode != nil {
		v.add(field+".icmpCode", "must only be set for protocol ICMP")
	}
}

// icmp checks an ICMP type or code, if set.
func (v *fieldErrors) icmp(field string, n *int) {
	if n != nil && (*n < 0 || *n > MaxICMPTypeOrCode) {
		v.add(field, fmt.Sprintf("must be between 0 and %d", MaxICMPTypeOrCode))
	}
}

func (v *fieldErrors) appIntent(o *AppIntent) {
	s := o.Spec
	v.name("spec.vpc", s.VPC, false)
	v.addAll(s.Selector.Validate("spec.selector"))
	if b := s.Bandwidth; b != nil {
		v.rates("spec.bandwidth.min", b.Min, "spec.bandwidth.max", b.Max)
	}
	switch s.Latency {
	case "", LatencyNormal, LatencyLow:
	default:
		v.add("spec.latency", fmt.Sprintf("unknown latency %q, want %s or %s", s.Latency, LatencyLow, LatencyNormal))
	}
	each(v, "spec.talksTo", s.TalksTo, MaxRules, "entries", func(f string, d IntentDestination) {
		v.peer(f, d.PolicyPeer)
		each(v, f+".ports", d.Ports, MaxPorts, "ports", v.port)
	})
	each(v, "spec.exposes", s.Exposes, MaxRules, "entries", func(f string, e IntentExposure) {
		each(v, f+".ports", e.Ports, MaxPorts, "ports", v.port)
		each(v, f+".from", e.From, MaxPeers, "peers", v.peer)
	})
}

func (v *fieldErrors) qos(o *QoSClass) {
	s := o.Spec
	v.rates("spec.minRate", s.MinRate, "spec.maxRate", s.MaxRate)
	if s.Priority != nil && (*s.Priority < 0 || *s.Priority > MaxPriority) {
		v.add("spec.priority", fmt.Sprintf("must be between 0 and %d", MaxPriority))
	}
	if s.DSCP < 0 || s.DSCP > MaxDSCP {
		v.add("spec.dscp", fmt.Sprintf("must be between 0 and %d", MaxDSCP))
	}
}

// rates checks a guaranteed minimum and a cap: both parse, and a cap that
// is set is neither zero nor below the minimum.
func (v *fieldErrors) rates(minField string, minRate Bandwidth, maxField string, maxRate Bandwidth) {
	lo, minErr := minRate.BitsPerSecond()
	if minErr != nil {
		v.add(minField, minErr.Error())
	}
	hi, maxErr := maxRate.BitsPerSecond()
	switch {
	case maxErr != nil:
		v.add(maxField, maxErr.Error())
	case maxRate == "":
	case hi == 0:
		v.add(maxField, "must be greater than zero")
	case minErr == nil && hi < lo:
		v.add(maxField, fmt.Sprintf("must be at least %s (%s)", minField, minRate))
	}
}

// immutable checks the fields an update may not change.
func (v *fieldErrors) immutable(newObj, oldObj Object) {
	nm, om := newObj.GetObjectMeta(), oldObj.GetObjectMeta()
	if nm.Name != om.Name {
		v.add("metadata.name", MsgImmutable)
	}
	if nm.Tenant != om.Tenant {
		v.add("metadata.tenant", MsgImmutable)
	}
	switch n := newObj.(type) {
	case *Trace:
		if !reflect.DeepEqual(n.Spec, oldObj.(*Trace).Spec) {
			v.add("spec", MsgImmutable)
		}
	case *Capture:
		if !reflect.DeepEqual(n.Spec, oldObj.(*Capture).Spec) {
			v.add("spec", MsgImmutable)
		}
	case *Subnet:
		o := oldObj.(*Subnet)
		if n.Spec.VPC != o.Spec.VPC {
			v.add("spec.vpc", MsgImmutable)
		}
		if canonicalPrefix(n.Spec.CIDR) != canonicalPrefix(o.Spec.CIDR) {
			v.add("spec.cidr", MsgImmutable)
		}
	case *Endpoint:
		o := oldObj.(*Endpoint)
		if n.Spec.Subnet != o.Spec.Subnet {
			v.add("spec.subnet", MsgImmutable)
		}
		// The address is fixed once requested or allocated; repeating it
		// (or the allocated one) in the spec is not a change.
		ip := canonicalAddr(n.Spec.IP)
		if ip != "" && (o.Spec.IP != "" || o.Status.IP != "") &&
			ip != canonicalAddr(o.Spec.IP) && ip != canonicalAddr(o.Status.IP) {
			v.add("spec.ip", MsgImmutable)
		}
	}
}

// refs checks references to other objects. Names that failed the static
// checks are not looked up.
func (v *fieldErrors) refs(o Object, l Lookup) {
	m := o.GetObjectMeta()
	if namespaced(kindOf(o)) && nameError(m.Tenant) == "" {
		if _, ok := l.Get(KindTenant, "", m.Tenant); !ok {
			v.add("metadata.tenant", fmt.Sprintf("Tenant %q not found", m.Tenant))
		}
	}
	switch o := o.(type) {
	case *Subnet:
		v.subnetRefs(o, l)
	case *Endpoint:
		v.endpointRefs(o, l)
	case *SecurityPolicy, *AppIntent:
		v.vpcRefs(m.Tenant, *vpcRef(o), l)
	case *Trace:
		v.traceRefs(o, l)
	case *Capture:
		v.captureRefs(o, l)
	}
}

// vpcRefs checks the spec.vpc of a policy or intent: a VPC of the tenant,
// or empty while the tenant has exactly one VPC (DefaultRefs fills it in).
func (v *fieldErrors) vpcRefs(tenant, vpc string, l Lookup) {
	if vpc != "" {
		if nameError(vpc) == "" {
			if _, ok := getAs[*VPC](l, KindVPC, tenant, vpc); !ok {
				v.add("spec.vpc", fmt.Sprintf("VPC %q not found", vpc))
			}
		}
		return
	}
	switch n := len(l.List(KindVPC, tenant)); {
	case n == 0:
		v.add("spec.vpc", fmt.Sprintf("%s (tenant %q has no VPC)", MsgRequired, tenant))
	case n > 1:
		v.add("spec.vpc", fmt.Sprintf("%s when the tenant has more than one VPC (tenant %q has %d)", MsgRequired, tenant, n))
	}
}

func (v *fieldErrors) subnetRefs(o *Subnet, l Lookup) {
	tenant, s := o.Metadata.Tenant, o.Spec
	if nameError(s.VPC) != "" {
		return
	}
	vpc, ok := getAs[*VPC](l, KindVPC, tenant, s.VPC)
	if !ok {
		v.add("spec.vpc", fmt.Sprintf("VPC %q not found", s.VPC))
		return
	}
	p, msg := parseCIDR(s.CIDR)
	if msg != "" {
		return
	}
	inside := false
	for _, c := range vpc.Spec.CIDRs {
		if vp, err := netip.ParsePrefix(c); err == nil && within(p, vp) {
			inside = true
			break
		}
	}
	if !inside {
		v.add("spec.cidr", fmt.Sprintf("must be inside a CIDR of VPC %q (%s)", s.VPC, strings.Join(vpc.Spec.CIDRs, ", ")))
		return
	}
	for _, other := range l.List(KindSubnet, tenant) {
		sib, ok := other.(*Subnet)
		if !ok || sib.Metadata.Name == o.Metadata.Name || sib.Spec.VPC != s.VPC {
			continue
		}
		if sp, err := netip.ParsePrefix(sib.Spec.CIDR); err == nil && sp.Overlaps(p) {
			v.add("spec.cidr", fmt.Sprintf("overlaps %s of Subnet %q", sib.Spec.CIDR, sib.Metadata.Name))
			return
		}
	}
}

func (v *fieldErrors) endpointRefs(o *Endpoint, l Lookup) {
	tenant, s := o.Metadata.Tenant, o.Spec
	if nameError(s.Subnet) == "" {
		if sn, ok := getAs[*Subnet](l, KindSubnet, tenant, s.Subnet); !ok {
			v.add("spec.subnet", fmt.Sprintf("Subnet %q not found", s.Subnet))
		} else if ip, msg := parseUnicast(s.IP); s.IP != "" && msg == "" {
			if msg := ipInSubnetError(ip, sn); msg != "" {
				v.add("spec.ip", msg)
			}
		}
	}
	if nameError(s.Host) == "" {
		if _, ok := getAs[*Host](l, KindHost, "", s.Host); !ok {
			v.add("spec.host", fmt.Sprintf("Host %q not found", s.Host))
		}
	}
	if s.QoSClass != "" && nameError(s.QoSClass) == "" {
		if _, ok := getAs[*QoSClass](l, KindQoSClass, tenant, s.QoSClass); !ok {
			v.add("spec.qosClass", fmt.Sprintf("QoSClass %q not found", s.QoSClass))
		}
	}
}

// ipInSubnetError returns why ip cannot be an endpoint address in sn, or "".
func ipInSubnetError(ip netip.Addr, sn *Subnet) string {
	p, err := netip.ParsePrefix(sn.Spec.CIDR)
	if err != nil {
		return "" // the stored subnet is broken; nothing sensible to say about ip
	}
	p = p.Masked()
	name := sn.Metadata.Name
	switch {
	case !p.Contains(ip):
		return fmt.Sprintf("must be inside %s of Subnet %q", p, name)
	case ip == p.Addr():
		return fmt.Sprintf("must not be the network address of Subnet %q", name)
	case p.Addr().Is4() && ip == lastAddr(p):
		return fmt.Sprintf("must not be the broadcast address of Subnet %q", name)
	case sn.Spec.Gateway != "" && canonicalAddr(sn.Spec.Gateway) == ip.String():
		return fmt.Sprintf("must not be the gateway address of Subnet %q", name)
	}
	return ""
}

// vpcKeepsSubnets checks that a VPC update keeps every subnet of the VPC
// inside one of its CIDRs.
func (v *fieldErrors) vpcKeepsSubnets(o *VPC, l Lookup) {
	var cidrs []netip.Prefix
	for _, c := range o.Spec.CIDRs {
		p, msg := parseCIDR(c)
		if msg != "" {
			return // already reported; the check would only add noise
		}
		cidrs = append(cidrs, p)
	}
	for _, other := range l.List(KindSubnet, o.Metadata.Tenant) {
		sn, ok := other.(*Subnet)
		if !ok || sn.Spec.VPC != o.Metadata.Name {
			continue
		}
		sp, err := netip.ParsePrefix(sn.Spec.CIDR)
		if err != nil {
			continue
		}
		inside := false
		for _, p := range cidrs {
			inside = inside || within(sp, p)
		}
		if !inside {
			v.add("spec.cidrs", fmt.Sprintf("must keep Subnet %q (%s) inside a CIDR", sn.Metadata.Name, sn.Spec.CIDR))
		}
	}
}

func getAs[T Object](l Lookup, kind, tenant, name string) (T, bool) {
	o, ok := l.Get(kind, tenant, name)
	if !ok {
		var zero T
		return zero, false
	}
	t, ok := o.(T)
	return t, ok
}

// parseCIDR parses an IPv4 CIDR that must be in canonical form (no host
// bits).
func parseCIDR(s string) (netip.Prefix, string) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return netip.Prefix{}, fmt.Sprintf("invalid CIDR %q, want an address and a prefix length such as 10.0.0.0/16", s)
	case p.Masked() != p:
		return netip.Prefix{}, fmt.Sprintf("host bits set in %s (did you mean %s?)", s, p.Masked())
	case !p.Addr().Is4():
		return netip.Prefix{}, MsgIPv6 + ": " + s
	}
	return p, ""
}

// parseUnicast parses an IP address usable as a unicast source: not
// unspecified, multicast, broadcast, IPv4-mapped or zoned.
func parseUnicast(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, fmt.Sprintf("invalid IP address %q", s)
	case a.Zone() != "":
		return a, "must not have a zone"
	case a.Is4In6():
		return a, fmt.Sprintf("must not be an IPv4-mapped IPv6 address; write %s", a.Unmap())
	case a.IsUnspecified(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return a, "must be a unicast address"
	}
	return a, ""
}

// within reports whether p lies entirely inside outer.
func within(p, outer netip.Prefix) bool {
	return outer.Bits() <= p.Bits() && outer.Contains(p.Addr())
}

// lastAddr returns the last address of p (the broadcast address of an IPv4
// prefix).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	hostBits := 128 - p.Bits()
	if p.Addr().Is4() {
		hostBits = 32 - p.Bits()
	}
	for i := 15; i >= 0 && hostBits > 0; i-- {
		n := min(hostBits, 8)
		b[i] |= byte(1<<n - 1)
		hostBits -= n
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		return a.Unmap()
	}
	return a
}
