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
	Name   string            `json:"name"`
	Tenant string            `json:"tenant,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
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
	// plain number of bit/s.
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

// VPCSpec lists the VPC's address ranges.
type VPCSpec struct {
	CIDRs []string `json:"cidrs"`
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
	// CIDR must lie inside one of the VPC's CIDRs and not overlap another
	// subnet of the VPC. Immutable.
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
}

// ---- SecurityPolicy ----

// SecurityPolicy allows traffic to and from the endpoints it selects. Once
// any policy selects an endpoint in a direction, only what some policy
// allows in that direction passes.
type SecurityPolicy struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta         `json:"metadata"`
	Spec     SecurityPolicySpec `json:"spec"`
}

// SecurityPolicySpec selects endpoints and lists allowed peers.
type SecurityPolicySpec struct {
	// Selector picks the endpoints (of the same tenant) the policy applies to;
	// an empty selector selects all of the tenant's endpoints.
	Selector LabelSelector `json:"selector"`
	Ingress  []PolicyRule  `json:"ingress,omitempty"`
	Egress   []PolicyRule  `json:"egress,omitempty"`
}

// PolicyRule allows traffic from (ingress) or to (egress) any of Peers on
// any of Ports. No peers means any peer; no ports means any port.
type PolicyRule struct {
	Peers []PolicyPeer `json:"peers,omitempty"`
	Ports []PolicyPort `json:"ports,omitempty"`
}

// PolicyPeer is either endpoints selected by labels or an address range.
type PolicyPeer struct {
	Selector *LabelSelector `json:"selector,omitempty"`
	CIDR     string         `json:"cidr,omitempty"`
}

// PolicyPort is a protocol and an optional port range.
type PolicyPort struct {
	// Protocol is TCP, UDP, SCTP or ICMP (default TCP).
	Protocol string `json:"protocol,omitempty"`
	// Port is the first port; 0 means all ports. Not allowed with ICMP.
	Port int `json:"port,omitempty"`
	// EndPort, if set, makes Port..EndPort a range.
	EndPort int `json:"endPort,omitempty"`
}

// LabelSelector matches labels. All requirements must hold.
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

// LabelSelectorRequirement is one set-based requirement.
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

// QoSClassSpec sets bandwidth, priority and marking.
type QoSClassSpec struct {
	// MinRate is the guaranteed egress rate per endpoint.
	MinRate Bandwidth `json:"minRate,omitempty"`
	// MaxRate caps the egress rate per endpoint; must be >= MinRate.
	MaxRate Bandwidth `json:"maxRate,omitempty"`
	// Priority 0 (highest) to 7 (lowest); default 4.
	Priority *int `json:"priority,omitempty"`
	// DSCP 0..63 written into the outer and inner IP header.
	DSCP int `json:"dscp,omitempty"`
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

// Compile-time checks that every kind is an Object.
var (
	_ Object = (*Tenant)(nil)
	_ Object = (*Host)(nil)
	_ Object = (*VPC)(nil)
	_ Object = (*Subnet)(nil)
	_ Object = (*Endpoint)(nil)
	_ Object = (*SecurityPolicy)(nil)
	_ Object = (*QoSClass)(nil)
)
