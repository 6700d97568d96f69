// Package auth decides who a request to the controller's API is and what it
// may do.
//
// Authentication: a bearer token ("weft_<id>_<secret>", see ParseToken),
// stored hashed at tokens/<id> in etcd and followed by every replica, so
// that a revoked or expired token is refused everywhere within a second;
// or a client certificate from the cluster CA, whose URI SAN
// weft://role/<role>[/tenant/<t>][/host/<h>][/uid/<u>] carries the same
// scope. An agent's credential is bound to its Host's UID: it stops working
// when the Host is deleted, and re-creating a Host of the same name does not
// revive it.
//
// Authorization: five roles. cluster-admin may do everything;
// tenant-admin(T) writes tenant T's objects and reads T's Tenant;
// tenant-viewer(T) only reads them; agent(H) reads its Host and the
// endpoints placed on H, writes their status and annotations, creates
// endpoints on H (the CNI path, which may name a netns) and reads the VPCs, subnets, policies
// and QoS classes of the tenants with endpoints on H; bootstrap(H) only
// enrols host H, once. Host objects, Endpoint.spec.netns, the spec.host of
// an existing endpoint and every status are privileged. A credential asking
// for another tenant gets 403 with a message that says nothing of that
// tenant; lists and watches across tenants are narrowed to what the
// credential may see (Authorizer.Filter).
package auth
