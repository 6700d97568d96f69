package v1

// APIVersion is the only apiVersion this package decodes.
const APIVersion = "weft/v1"

// Kinds served by the weft/v1 API.
const (
	KindTenant         = "Tenant"
	KindHost           = "Host"
	KindVPC            = "VPC"
	KindSubnet         = "Subnet"
	KindEndpoint       = "Endpoint"
	KindSecurityPolicy = "SecurityPolicy"
	KindQoSClass       = "QoSClass"
	KindAppIntent      = "AppIntent"
)

// TypeMeta names the schema of an object.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// ObjectMeta is the metadata every object carries. Name and, for
// tenant-scoped kinds, Tenant are set by the user; the rest is set by the
// controller.
type ObjectMeta struct {
	Name   string `json:"name"`
	Tenant string `json:"tenant,omitempty"`
	// Labels are what selectors match: at most MaxLabels, keys and values
	// in the Kubernetes syntax ("app", "weft.io/tier").
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are stored and returned, never interpreted: tools
	// (Argo CD, Helm, kubectl) keep their notes here. At most
	// MaxAnnotations entries with label-syntax keys, MaxAnnotationsSize
	// bytes of keys and values together. Changing them does not change
	// Generation.
	Annotations map[string]string `json:"annotations,omitempty"`
	// OwnerReferences name the objects this one belongs to: the
	// controller keeps an owned object in step with its owner and deletes
	// it with the owner (an AppIntent owns the SecurityPolicy and QoSClass
	// it generates). An owner of a tenant-scoped kind is in the object's
	// own tenant.
	OwnerReferences []OwnerReference `json:"ownerReferences,omitempty"`
	// UID is unique per incarnation of a name (delete and re-create gives a new UID).
	UID string `json:"uid,omitempty"`
	// ResourceVersion is the etcd mod revision of the object, in decimal.
	// An update that carries one must match the stored object (optimistic
	// concurrency); an empty one means "last write wins".
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Generation increments on every change of spec or labels.
	Generation int64 `json:"generation,omitempty"`
	// CreationTimestamp is RFC 3339, UTC.
	CreationTimestamp string `json:"creationTimestamp,omitempty"`
}

// OwnerReference names the owner of an object.
type OwnerReference struct {
	// Kind is the owner's kind, exactly as in its "kind" ("AppIntent").
	Kind string `json:"kind"`
	Name string `json:"name"`
	// UID is the owner's metadata.uid: an owner deleted and re-created
	// under the same name is another owner.
	UID string `json:"uid"`
}

// Object is implemented by every weft/v1 resource.
type Object interface {
	// GetTypeMeta returns the object's apiVersion and kind.
	GetTypeMeta() *TypeMeta
	// GetObjectMeta returns the object's metadata, for reading and writing.
	GetObjectMeta() *ObjectMeta
}

// GetTypeMeta implements Object.
func (t *TypeMeta) GetTypeMeta() *TypeMeta { return t }

// ---- Tenant ----

// Tenant is a customer of the data centre; it owns VPCs and everything in them.
type Tenant struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     TenantSpec `json:"spec"`
}

// TenantSpec describes a tenant.
type TenantSpec struct {
	// Description is free text for operators.
	Description string `json:"description,omitempty"`
	// Quota caps what the tenant may create; nil means no caps.
	Quota *TenantQuota `json:"quota,omitempty"`
}

// TenantQuota caps the number of a tenant's objects; 0 means unlimited.
// A create that would exceed a cap is refused, checked in the same
// transaction as the write.
type TenantQuota struct {
	Endpoints int `json:"endpoints,omitempty"`
	VPCs      int `json:"vpcs,omitempty"`
	// Policies counts SecurityPolicies, those an AppIntent generates included.
	Policies int `json:"policies,omitempty"`
}

// ---- Host ----

// Host is one physical server running a weft agent. Cluster-scoped.
type Host struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     HostSpec   `json:"spec"`
	Status   HostStatus `json:"status,omitempty"`
}

// HostSpec describes a server's place in the underlay.
type HostSpec struct {
	// UnderlayIP is the address VXLAN traffic to this host is sent to.
	UnderlayIP string `json:"underlayIP"`
	// Capacity is the NIC bandwidth, e.g. "10Gbit", "25G", "1000Mbit" or a
	// plain number of bit/s. Guaranteed minimum rates (QoSClass and VPC
	// minRate) are admitted against it: the minimums committed on the host
	// never add up to more, and a Host without capacity admits none.
	Capacity Bandwidth `json:"capacity,omitempty"`
}

// Host liveness values reported in HostStatus.Liveness.
const (
	LivenessUnknown = "Unknown"
	LivenessAlive   = "Alive"
	LivenessSuspect = "Suspect"
	LivenessDead    = "Dead"
)

// HostStatus is written by the controller.
type HostStatus struct {
	// HostID is the host's number on the UDP channel, allocated by the
	// controller when the Host is created; unique while the Host exists.
	HostID       uint32 `json:"hostID,omitempty"`
	Liveness     string `json:"liveness,omitempty"`
	LastSeen     string `json:"lastSeen,omitempty"`
	AgentVersion string `json:"agentVersion,omitempty"`
	// ViewVersion is the version of the host's compiled view the agent last acknowledged.
	ViewVersion uint64 `json:"viewVersion,omitempty"`
	// LastError is the agent's error: why it refused its last view (NACK),
	// or why programming the view it acknowledged failed; empty once a view
	// is programmed.
	LastError string `json:"lastError,omitempty"`
	// Replica is the southbound address of the controller replica the
	// host's agent last connected to: that replica speaks for the host's
	// liveness while it is a member.
	Replica string `json:"replica,omitempty"`
	// Conditions are ConditionAlive and ConditionViewApplied, kept in
	// step with the fields above by their writers (SetHostConditions).
	Conditions []Condition `json:"conditions,omitempty"`
}

// ---- VPC ----

// VPC is a tenant's private network: one or more CIDRs, isolated from every
// other VPC, carried over the overlay with its own VNI.
type VPC struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     VPCSpec    `json:"spec"`
	Status   VPCStatus  `json:"status,omitempty"`
}

// VPCSpec lists the VPC's address ranges and its network-wide policy and
// quality of service.
type VPCSpec struct {
	// CIDRs are IPv4 ranges (/8../30) that do not overlap each other. IPv6
	// is refused until the data plane supports it.
	CIDRs []string `json:"cidrs"`
	// DefaultPolicy is DefaultPolicyAllow (the default) or
	// DefaultPolicyDeny. Deny isolates both directions of every endpoint
	// of the VPC, as if a policy selecting each of them listed both
	// directions: then only what some SecurityPolicy allows passes. Empty
	// (objects stored before the field existed) means allow.
	DefaultPolicy string `json:"defaultPolicy,omitempty"`
	// QoS is an aggregate shared by the VPC's endpoints on each host; nil
	// means none.
	QoS *VPCQoS `json:"qos,omitempty"`
}

// VPC default policies (VPCSpec.DefaultPolicy).
const (
	DefaultPolicyAllow = "allow"
	DefaultPolicyDeny  = "deny"
)

// VPCQoS is a VPC's per-host aggregate: it applies on every host
// separately, to the VPC's endpoints on that host together.
type VPCQoS struct {
	// MaxRate caps the traffic of the VPC's endpoints on a host together,
	// in each direction (as QoSClassSpec.MaxRate does for one endpoint).
	MaxRate Bandwidth `json:"maxRate,omitempty"`
	// MinRate is guaranteed to the VPC's endpoints on a host together on
	// the host's underlay uplink, and admitted against Host.spec.capacity
	// on every host the VPC has endpoints on. Must not exceed MaxRate when
	// both are set.
	MinRate Bandwidth `json:"minRate,omitempty"`
}

// VPCStatus is written by the controller.
type VPCStatus struct {
	// VNI is the VXLAN network identifier allocated to this VPC.
	VNI uint32 `json:"vni,omitempty"`
}

// ---- Subnet ----

// Subnet is a range inside a VPC from which endpoints get addresses.
type Subnet struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta   `json:"metadata"`
	Spec     SubnetSpec   `json:"spec"`
	Status   SubnetStatus `json:"status,omitempty"`
}

// SubnetSpec places a subnet in its VPC.
type SubnetSpec struct {
	// VPC is the name of a VPC of the same tenant. Immutable.
	VPC string `json:"vpc"`
	// CIDR is an IPv4 range that must lie inside one of the VPC's CIDRs and
	// not overlap another subnet of the VPC. Immutable.
	CIDR string `json:"cidr"`
	// Gateway defaults to the first host address of CIDR.
	Gateway string `json:"gateway,omitempty"`
}

// SubnetStatus is written by the controller.
type SubnetStatus struct {
	// VNI is the VNI of the subnet's VPC.
	VNI uint32 `json:"vni,omitempty"`
}

// ---- Endpoint ----

// Endpoint is one VM or container interface attached to a subnet on a host.
type Endpoint struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta     `json:"metadata"`
	Spec     EndpointSpec   `json:"spec"`
	Status   EndpointStatus `json:"status,omitempty"`
}

// EndpointSpec says where an endpoint lives and what it asks for.
type EndpointSpec struct {
	// Subnet is the name of a Subnet of the same tenant. Immutable.
	Subnet string `json:"subnet"`
	// Host is the name of the Host the endpoint runs on. Changing it is a migration.
	Host string `json:"host"`
	// IP requests a fixed address inside the subnet; empty means allocate one. Immutable once set.
	IP string `json:"ip,omitempty"`
	// MAC requests a fixed unicast MAC; empty means derive one from the IP.
	MAC string `json:"mac,omitempty"`
	// Netns is the path of an existing network namespace to attach to
	// (e.g. /var/run/netns/x or /proc/PID/ns/net); empty means the agent makes one.
	Netns string `json:"netns,omitempty"`
	// QoSClass names a QoSClass of the same tenant.
	QoSClass string `json:"qosClass,omitempty"`
}

// Endpoint phases reported in EndpointStatus.Phase.
const (
	PhasePending = "Pending"
	PhaseReady   = "Ready"
	PhaseFailed  = "Failed"
	PhaseLost    = "Lost" // its host is dead
)

// EndpointStatus is written by the controller and the agent.
type EndpointStatus struct {
	IP    string `json:"ip,omitempty"`
	MAC   string `json:"mac,omitempty"`
	Host  string `json:"host,omitempty"`
	Netns string `json:"netns,omitempty"`
	VNI   uint32 `json:"vni,omitempty"`
	Phase string `json:"phase,omitempty"`
	// Message explains a Failed or Lost phase.
	Message string `json:"message,omitempty"`
	// Identity is the endpoint's security identity, allocated by the
	// controller per distinct label set per VPC (endpoints of one VPC with
	// equal labels share it; 0 until allocated). Packets carry it so that
	// the receiving host enforces policy without knowing the sender's
	// address. Status writers cannot change it.
	Identity uint32 `json:"identity,omitempty"`
	// Conditions report what the endpoint's agent has programmed:
	// ConditionPolicyProgrammed and ConditionQoSProgrammed, each True once
	// the kernel accepted the rules of the generation it names; and
	// ConditionReady, which the controller derives from them and the
	// phase (SetEndpointReady).
	Conditions []Condition `json:"conditions,omitempty"`
}

// ---- SecurityPolicy ----

// SecurityPolicy allows traffic to and from the endpoints it selects, with
// the semantics of a Kubernetes NetworkPolicy:
//
//   - An endpoint selected by any policy is isolated in each direction
//     that a selecting policy lists (ingress, egress): only what some rule
//     of some selecting policy allows in that direction passes; the rules
//     of all selecting policies are ORed. An endpoint that no policy
//     selects allows everything, unless its VPC's defaultPolicy is deny.
//   - A policy lists a direction when its spec has the field, even empty:
//     "ingress: []" isolates ingress and allows nothing in (deny all), a
//     policy without "ingress" (absent or null) leaves ingress alone;
//     egress likewise.
//   - Connections are stateful: replies of an allowed connection pass both
//     ways. A change applies to new connections at once and drops the
//     established connections it no longer allows within a second.
//   - Enforcement sits outside the endpoint's network namespace, where the
//     workload cannot remove it.
type SecurityPolicy struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta         `json:"metadata"`
	Spec     SecurityPolicySpec `json:"spec"`
}

// SecurityPolicySpec selects endpoints and lists allowed peers.
type SecurityPolicySpec struct {
	// VPC is the VPC of the same tenant the policy applies in: it selects
	// endpoints of that VPC, and its selector peers are endpoints of that
	// VPC. It may be left empty only while the tenant has exactly one VPC:
	// the controller then writes that VPC's name (see DefaultRefs).
	VPC string `json:"vpc,omitempty"`
	// Selector picks the endpoints of the VPC the policy applies to; an
	// empty selector selects all of them.
	Selector LabelSelector `json:"selector"`
	// Ingress rules allow traffic to the selected endpoints, Egress rules
	// traffic from them; at most MaxRules each. A nil list (the field
	// absent or null) leaves its direction alone; a non-nil one, even
	// empty, isolates it (see SecurityPolicy), so an empty list is kept
	// as such when stored (omitzero).
	Ingress []PolicyRule `json:"ingress,omitzero"`
	Egress  []PolicyRule `json:"egress,omitzero"`
}

// PolicyRule allows traffic from (ingress) or to (egress) any of Peers on
// any of Ports. No peers means any peer, inside the VPC or outside; no
// ports means all traffic. At most MaxPeers peers and MaxPorts ports.
type PolicyRule struct {
	Peers []PolicyPeer `json:"peers,omitempty"`
	Ports []PolicyPort `json:"ports,omitempty"`
}

// PolicyPeer is exactly one of: the endpoints of the policy's VPC that a
// selector matches (an empty selector matches all of them; one that
// matches none allows nothing), or an IPv4 address range, inside the VPC
// or outside it.
type PolicyPeer struct {
	Selector *LabelSelector `json:"selector,omitempty"`
	CIDR     string         `json:"cidr,omitempty"`
}

// PolicyPort is a protocol with a destination port range (TCP, UDP,
// SCTP) or an ICMP type and code.
type PolicyPort struct {
	// Protocol is TCP, UDP, SCTP or ICMP (default TCP).
	Protocol string `json:"protocol,omitempty"`
	// Port is the first destination port, 1..65535; 0 means all ports. Not
	// allowed with ICMP.
	Port int `json:"port,omitempty"`
	// EndPort, if set, makes Port..EndPort a range (EndPort >= Port).
	EndPort int `json:"endPort,omitempty"`
	// ICMPType (0..255) limits an ICMP port to one message type; nil means
	// every type. Only with protocol ICMP.
	ICMPType *int `json:"icmpType,omitempty"`
	// ICMPCode (0..255) limits it further to one code of ICMPType; nil
	// means every code. Requires ICMPType.
	ICMPCode *int `json:"icmpCode,omitempty"`
}

// LabelSelector matches labels. All requirements must hold. A selector has
// at most MaxSelectorRequirements requirements (matchLabels entries and
// matchExpressions together).
type LabelSelector struct {
	MatchLabels      map[string]string          `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// Selector operators for LabelSelectorRequirement.Operator.
const (
	OpIn           = "In"
	OpNotIn        = "NotIn"
	OpExists       = "Exists"
	OpDoesNotExist = "DoesNotExist"
)

// LabelSelectorRequirement is one set-based requirement, with at most
// MaxSelectorValues values.
type LabelSelectorRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// ---- QoSClass ----

// QoSClass is a tenant's named quality of service that endpoints refer to.
type QoSClass struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta   `json:"metadata"`
	Spec     QoSClassSpec `json:"spec"`
}

// QoSClassSpec sets bandwidth, priority and marking, per endpoint.
type QoSClassSpec struct {
	// MinRate is guaranteed to each endpoint of the class on its host's
	// underlay uplink. It is admitted against Host.spec.capacity: a
	// create, migration, class change or capacity change that would make
	// a host's committed minimums exceed its capacity is refused, and a
	// Host without capacity admits no minRate.
	MinRate Bandwidth `json:"minRate,omitempty"`
	// MaxRate caps each endpoint's traffic in both directions (what it
	// sends and what is sent to it), for every protocol, same-host traffic
	// included; must be >= MinRate.
	MaxRate Bandwidth `json:"maxRate,omitempty"`
	// Priority 0 (highest) to 7 (lowest) orders the endpoint's traffic
	// when the uplink is contended; default 4.
	Priority *int `json:"priority,omitempty"`
	// DSCP 0..63 is written into the outer (underlay) IP header of the
	// endpoint's encapsulated traffic, so that the physical network can
	// honour it; the inner header is left as the workload wrote it.
	DSCP int `json:"dscp,omitempty"`
}

// ---- AppIntent ----

// AppIntent states what an application needs from the network, not how to
// provide it: the controller compiles it into SecurityPolicy and QoSClass
// objects it owns (metadata.ownerReferences), keeps them in step on every
// change and deletes them with the intent. Its status lists those objects
// and every need it could not meet.
type AppIntent struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta      `json:"metadata"`
	Spec     AppIntentSpec   `json:"spec"`
	Status   AppIntentStatus `json:"status,omitempty"`
}

// AppIntentSpec names the application's endpoints and states their needs.
// Each need that is absent leaves that aspect alone.
type AppIntentSpec struct {
	// VPC is the VPC of the same tenant the intent applies in, defaulted
	// as SecurityPolicySpec.VPC is.
	VPC string `json:"vpc,omitempty"`
	// Selector picks the application's endpoints in the VPC; an empty
	// selector picks all of them.
	Selector LabelSelector `json:"selector"`
	// Bandwidth asks for a guaranteed minimum and a cap per endpoint
	// (QoSClassSpec's minRate and maxRate, admitted the same way).
	Bandwidth *IntentBandwidth `json:"bandwidth,omitempty"`
	// Latency is LatencyNormal (the default) or LatencyLow. Low gives the
	// endpoints' traffic QoS priority 0 and DSCP 46 (EF); normal priority 4
	// and DSCP 0.
	Latency string `json:"latency,omitempty"`
	// TalksTo lists what the endpoints may open connections to. When
	// present, their egress is isolated to exactly these (and replies);
	// when absent, the intent does not constrain egress. At most MaxRules.
	TalksTo []IntentDestination `json:"talksTo,omitempty"`
	// Exposes lists the ports the endpoints accept connections on, and
	// from whom. When present, their ingress is isolated to exactly these;
	// when absent, the intent does not constrain ingress. At most MaxRules.
	Exposes []IntentExposure `json:"exposes,omitempty"`
}

// AppIntent latencies (AppIntentSpec.Latency).
const (
	LatencyNormal = "normal"
	LatencyLow    = "low"
)

// IntentBandwidth is a per-endpoint bandwidth need; either rate may be
// empty, and Min must not exceed Max when both are set.
type IntentBandwidth struct {
	Min Bandwidth `json:"min,omitempty"`
	Max Bandwidth `json:"max,omitempty"`
}

// IntentDestination is one peer (a selector or a CIDR, as in a
// PolicyPeer) and the ports the endpoints may reach on it; no ports means
// all traffic.
type IntentDestination struct {
	PolicyPeer `json:",inline"`
	Ports      []PolicyPort `json:"ports,omitempty"`
}

// IntentExposure is a set of ports the endpoints accept connections on
// and the peers allowed to connect; no peers in From means anyone, no
// ports means all traffic.
type IntentExposure struct {
	Ports []PolicyPort `json:"ports,omitempty"`
	From  []PolicyPeer `json:"from,omitempty"`
}

// AppIntentStatus is written by the controller.
type AppIntentStatus struct {
	// ObservedGeneration is the generation of the spec the status describes.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Objects are the objects the controller generated for the intent, in
	// the intent's tenant.
	Objects []LocalObjectReference `json:"objects,omitempty"`
	// Unmet lists the needs that could not be met, each with its field and
	// the reason ("bandwidth.min: host h1 has capacity 1Gbit with 950Mbit
	// committed").
	Unmet []string `json:"unmet,omitempty"`
}

// LocalObjectReference names an object in the same tenant.
type LocalObjectReference struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// GetObjectMeta implements Object.
func (o *Tenant) GetObjectMeta() *ObjectMeta { return &o.Metadata }

// GetObjectMeta implements Object.
func (o *Host) GetObjectMeta() *ObjectMeta { return &o.Metadata }

// GetObjectMeta implements Object.
func (o *VPC) GetObjectMeta() *ObjectMeta { return &o.Metadata }

// GetObjectMeta implements Object.
func (o *Subnet) GetObjectMeta() *ObjectMeta { return &o.Metadata }

// GetObjectMeta implements Object.
func (o *Endpoint) GetObjectMeta() *ObjectMeta { return &o.Metadata }

// GetObjectMeta implements Object.
func (o *SecurityPolicy) GetObjectMeta() *ObjectMeta { return &o.Metadata }

// GetObjectMeta implements Object.
func (o *QoSClass) GetObjectMeta() *ObjectMeta { return &o.Metadata }

// GetObjectMeta implements Object.
func (o *AppIntent) GetObjectMeta() *ObjectMeta { return &o.Metadata }

// Compile-time checks that every kind is an Object.
var (
	_ Object = (*Tenant)(nil)
	_ Object = (*Host)(nil)
	_ Object = (*VPC)(nil)
	_ Object = (*Subnet)(nil)
	_ Object = (*Endpoint)(nil)
	_ Object = (*SecurityPolicy)(nil)
	_ Object = (*QoSClass)(nil)
	_ Object = (*AppIntent)(nil)
)
