// Package cniserver is the agent's side of weft's CNI plugin: it serves the
// weft-cni plugin (cmd/weft-cni) on a unix socket (package cnirpc) and
// attaches containers by creating Endpoints through the API with the
// agent's credential. The plugin holds no credentials and touches no
// network state; the agent, which owns the data plane, does both.
//
// # Network configuration
//
//	{
//	  "cniVersion": "1.1.0", "name": "weft",
//	  "plugins": [{
//	    "type": "weft-cni",
//	    "agentSocket": "/run/weft/cni.sock",     (default)
//	    "tenant": "acme", "subnet": "pods",      (default: weft agent --cni-subnet)
//	    "vpc": "main",                           (optional: checked against the subnet's)
//	    "labels": {"app": "web"},                (optional; args.cni.labels add to them)
//	    "qosClass": "gold",                      (optional)
//	    "dns": {"nameservers": ["10.0.0.2"]},    (returned in the result)
//	    "capabilities": {"ips": true, "mac": true, "bandwidth": true,
//	                     "io.kubernetes.cri.pod-annotations": true}
//	  }]
//	}
//
// Capabilities: "ips" requests the endpoint's address (the first IPv4 one;
// its prefix length is the subnet's), "mac" its MAC. "bandwidth" is mapped
// to the tenant's QoS class with the highest maxRate that does not exceed
// the lower of the requested rates (a weft class caps both directions;
// bursts are the class's): bandwidth is the tenant's policy, so a rate no
// class fits is refused with an error that lists the classes, and so is a
// request the agent may not check (it reads a tenant's classes once the
// tenant has an endpoint on its host; the warm pool makes that so).
// CNI_ARGS pairs become annotations "cni-args.weft.io/KEY", the pod's
// annotations are copied, both within the API's limits.
//
// # Calls
//
// ADD creates the attachment's Endpoint on this host, with spec.netns the
// container's namespace, the selection's labels and class, annotations
// naming the attachment (network, container ID, interface name, netns) and
// the Host as owner; its name is "cni-" and a hash of the attachment,
// ending with the interface name, which the agent gives the interface in
// the namespace (IfName). It then waits until the agent has written the
// endpoint Ready with PolicyProgrammed and QoSProgrammed true for its
// generation (Tap), and returns the result: the interface, its address
// with the subnet's prefix and gateway, a default route through the
// gateway, the configuration's DNS. Any failure after the endpoint exists
// deletes it (the runtime retries ADD). ADD again returns the same
// attachment; ADD of an attachment in another namespace replaces it.
//
// DEL deletes the endpoint and waits (up to 5 s) for the agent to detach
// it; an attachment that does not exist is not an error. CHECK verifies
// that the endpoint is Ready and programmed, that the interface in the
// namespace is up with the endpoint's address, and that a previous result
// holds it. GC deletes the endpoints of the network's attachments on this
// host that are not among the runtime's valid attachments. STATUS says
// whether the agent reaches the API.
//
// A restarted agent lists its host's attachments before it serves (an
// index by attachment), so that ADD, DEL and CHECK after a restart find
// what an earlier agent made; an agent killed in the middle of an ADD
// leaves an endpoint that the runtime's retry finds and completes, or that
// GC collects.
//
// # Warm pool
//
// With a pool (weft agent --cni-pool), endpoints are created ahead per
// selection, their addresses and identities reserved and compiled into the
// agent's view, waiting to be attached; an ADD then only binds the
// container's namespace, records the attachment and has the agent attach
// that endpoint alone (no reconcile of the agent's whole view). See
// pool.go for the design and the choices.
package cniserver
