package cniserver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// NetConf is the network configuration weft-cni takes: the CNI fields and
// which subnet its endpoints join. Tenant and Subnet default to the
// agent's (Config.Default); VPC, if set, must be the subnet's.
type NetConf struct {
	types.PluginConf
	// AgentSocket is read by the plugin (cnirpc.DefaultSocket if empty).
	AgentSocket string `json:"agentSocket,omitempty"`
	Tenant      string `json:"tenant,omitempty"`
	VPC         string `json:"vpc,omitempty"`
	Subnet      string `json:"subnet,omitempty"`
	// Labels of the endpoints (their security identity: what policies
	// select); args.cni.labels add to them per call.
	Labels   map[string]string `json:"labels,omitempty"`
	QoSClass string            `json:"qosClass,omitempty"`
	// RuntimeConfig carries the capabilities the runtime fills.
	RuntimeConfig struct {
		// IPs ("ips"): the address to give the endpoint (the first IPv4
		// one; its prefix length is the subnet's).
		IPs []string `json:"ips,omitempty"`
		// MAC ("mac"): the endpoint's MAC.
		MAC string `json:"mac,omitempty"`
		// Bandwidth ("bandwidth"): a rate, mapped to one of the tenant's
		// QoS classes (see bandwidthClass).
		Bandwidth *Bandwidth `json:"bandwidth,omitempty"`
		// PodAnnotations ("io.kubernetes.cri.pod-annotations") are copied
		// to the endpoint's annotations.
		PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations,omitempty"`
	} `json:"runtimeConfig,omitempty"`
	// Args is the conventional "args" field: args.cni.labels add labels.
	Args struct {
		CNI struct {
			Labels map[string]string `json:"labels,omitempty"`
		} `json:"cni"`
	} `json:"args,omitempty"`
}

// Bandwidth is the CNI bandwidth capability (bit/s and bits).
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// rate is the cap asked for: the lower of the two rates set (a weft QoS
// class caps both directions alike), 0 for none.
func (b *Bandwidth) rate() uint64 {
	if b == nil {
		return 0
	}
	switch {
	case b.IngressRate == 0:
		return b.EgressRate
	case b.EgressRate == 0:
		return b.IngressRate
	}
	return min(b.IngressRate, b.EgressRate)
}

// Annotations weft writes on the endpoints of CNI attachments. The
// attachment is (network, container ID, interface name), as the runtime
// names it.
const (
	AnnotationNetwork     = "cni.weft.io/network"
	AnnotationContainerID = "cni.weft.io/container-id"
	AnnotationIfName      = "cni.weft.io/ifname"
	AnnotationNetns       = "cni.weft.io/netns"
	// argsPrefix prefixes the CNI_ARGS keys copied to annotations.
	argsPrefix = "cni-args.weft.io/"
)

// Endpoint names. An attachment's endpoint is named by a hash of the
// attachment and ends with its interface name, which the agent reads back
// (IfName) to name the interface inside the namespace.
const (
	namePrefix = "cni-"
	hashLen    = 12
)

// attachment names one CNI attachment.
type attachment struct {
	network, containerID, ifName string
}

func (a attachment) String() string {
	return fmt.Sprintf("network %q container %q interface %q", a.network, a.containerID, a.ifName)
}

// endpointName is the name of the endpoint of a.
func (a attachment) endpointName() string {
	h := sha256.Sum256([]byte(a.network + "\x00" + a.containerID + "\x00" + a.ifName))
	return namePrefix + hex.EncodeToString(h[:])[:hashLen] + "-" + a.ifName
}

// IfName returns the interface name of the endpoint named by ID
// "tenant/name" if it is a CNI attachment's, else "" (the default). It
// is agent.Config.IfName.
func IfName(id string) string {
	_, name, _ := strings.Cut(id, "/")
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok || len(rest) < hashLen+2 || rest[hashLen] != '-' {
		return ""
	}
	if _, err := hex.DecodeString(rest[:hashLen]); err != nil {
		return ""
	}
	return rest[hashLen+1:]
}

// checkIfName refuses an interface name the kernel or an endpoint name
// cannot take: weft puts it in the endpoint's name, so lower-case letters,
// digits and '-' only.
func checkIfName(s string) error {
	if s == "" || len(s) > 15 {
		return fmt.Errorf("interface name %q: want 1..15 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(s)-1) {
			return fmt.Errorf("interface name %q: weft takes lower-case letters, digits and inner '-' only", s)
		}
	}
	return nil
}

// parseNetConf decodes the network configuration of a call.
func parseNetConf(b []byte) (*NetConf, error) {
	var nc NetConf
	if err := json.Unmarshal(b, &nc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "parse the network configuration", err.Error())
	}
	if nc.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "the network configuration has no name", "")
	}
	return &nc, nil
}

// selection is the subnet, labels and class an attachment's endpoint gets.
type selection struct {
	tenant, vpc, subnet string
	labels              map[string]string
	qosClass            string
}

// key identifies the endpoints that can serve the same attachments (the
// warm pool's key).
func (s *selection) key(ifName string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s/%s/%s/%s", s.tenant, s.vpc, s.subnet, s.qosClass, ifName)
	for _, k := range slices.Sorted(maps.Keys(s.labels)) {
		fmt.Fprintf(&b, ",%s=%s", k, s.labels[k])
	}
	return b.String()
}

// selection returns what nc selects, with def's tenant, VPC and subnet
// where nc has none.
func (nc *NetConf) selection(def Selection) (*selection, error) {
	s := &selection{tenant: nc.Tenant, vpc: nc.VPC, subnet: nc.Subnet, qosClass: nc.QoSClass}
	if s.tenant == "" && s.subnet == "" {
		s.tenant, s.vpc, s.subnet = def.Tenant, def.VPC, def.Subnet
	}
	if s.tenant == "" || s.subnet == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "no subnet selected",
			"set tenant and subnet in the network configuration, or the agent's default (weft agent --cni-subnet TENANT/SUBNET)")
	}
	if len(nc.Labels)+len(nc.Args.CNI.Labels) > 0 {
		s.labels = maps.Clone(nc.Labels)
		if s.labels == nil {
			s.labels = map[string]string{}
		}
		maps.Copy(s.labels, nc.Args.CNI.Labels)
	}
	return s, nil
}

// requested returns the address and MAC the runtime asked for through the
// ips and mac capabilities.
func (nc *NetConf) requested() (ip, mac string, err error) {
	for _, s := range nc.RuntimeConfig.IPs {
		a, err := netip.ParsePrefix(s)
		if err != nil {
			addr, err2 := netip.ParseAddr(s)
			if err2 != nil {
				return "", "", types.NewError(types.ErrInvalidNetworkConfig, "runtimeConfig.ips: not an address", s)
			}
			a = netip.PrefixFrom(addr, addr.BitLen())
		}
		if a.Addr().Is4() {
			ip = a.Addr().String()
			break
		}
	}
	if m := nc.RuntimeConfig.MAC; m != "" {
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 {
			return "", "", types.NewError(types.ErrInvalidNetworkConfig, "runtimeConfig.mac: not a MAC address", m)
		}
		mac = hw.String()
	}
	return ip, mac, nil
}

// annotations returns the endpoint annotations of a call: the
// attachment's, the CNI_ARGS pairs and the pod's annotations that are
// valid annotations, within the API's limits (the rest are left out).
func annotations(a attachment, netns, args string, pod map[string]string) map[string]string {
	m := map[string]string{
		AnnotationNetwork: a.network, AnnotationContainerID: a.containerID, AnnotationIfName: a.ifName, AnnotationNetns: netns,
	}
	size := 0
	for k, v := range m {
		size += len(k) + len(v)
	}
	add := func(k, v string) {
		if _, ok := m[k]; ok || len(m) >= apiv1.MaxAnnotations || size+len(k)+len(v) > apiv1.MaxAnnotationsSize || !validAnnotation(k) {
			return
		}
		m[k] = v
		size += len(k) + len(v)
	}
	for pair := range strings.SplitSeq(args, ";") {
		if k, v, ok := strings.Cut(pair, "="); ok && k != "IgnoreUnknown" {
			add(argsPrefix+k, v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(pod)) {
		add(k, pod[k])
	}
	return m
}

// validAnnotation says the API takes k as an annotation key.
func validAnnotation(k string) bool {
	probe := &apiv1.Endpoint{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
		Metadata: apiv1.ObjectMeta{Name: "x", Tenant: "x", Annotations: map[string]string{k: ""}},
		Spec:     apiv1.EndpointSpec{Subnet: "x", Host: "x"}}
	return len(apiv1.ValidateObject(probe)) == 0
}
