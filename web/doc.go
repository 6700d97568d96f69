// Package web is the controller's web UI, the global view: a health map of
// every host, each tenant's VPCs, subnets and endpoints with the policies
// and QoS that apply to an endpoint, traces drawn as hop diagrams,
// captures with their download, and flow top talkers — all updated live
// from the API's watches.
//
// The UI is a few hand-written files (assets/: HTML, CSS and plain
// JavaScript, no framework and no build step) embedded in the binary and
// served by the controller under /ui/; nothing is loaded from elsewhere
// (the Content-Security-Policy allows this origin only).
//
// # Same API, same credentials
//
// The browser reads and writes through the controller's REST API, with the
// credential and the tenant scoping a CLI user of the same token has:
//
//	/ui/apis/weft/v1/…     forwarded to the REST handler (Config.API), with
//	                       Authorization: Bearer <the session's token>
//	/ui/version            likewise
//	/ui/view/watch         several API watches multiplexed in one stream
//	/ui/view/hostmap       the health map (below)
//	/ui/view/hosts         a page of hosts of a map group
//	/ui/session            GET: the session's identity and CSRF token
//	/ui/login, /ui/logout  POST
//
// With an Authenticator (Config.Auth), a user logs in with an API token
// (weft_…): Authenticate checks it and names its identity, and the UI
// keeps it in a server-side session; the browser holds only a random
// session id in a cookie (HttpOnly, SameSite=Strict, Secure when served
// over TLS, path /ui/). Every request that is not a GET or HEAD must carry
// the session's CSRF token in the X-Weft-CSRF header and must not come
// from another site (Origin, Sec-Fetch-Site); a login must be a JSON
// body, which a cross-site form cannot send. The token is re-checked by
// the API on every forwarded call, so a revoked or expired token stops
// working at once, session or not. Sessions live in the memory of the
// replica that made them (at most MaxSessions, for SessionTTL).
//
// Without an Authenticator (an API without authentication) the UI needs
// no login and forwards calls without a credential; the CSRF header is
// still required.
//
// # The health map
//
// At 100,000 hosts the browser must not list hosts. GET
// /ui/view/hostmap?by=state|replica|prefix[&prefix=P] answers with the
// hosts' states grouped — by liveness state, by the controller replica
// the host's agent is connected to, or by the next segment of the host
// name after P (cut at "-", ".", "_", "/" or ":"; or one more character
// when that would make more than 256 groups) — with each group's counts
// and one byte per host (its state) in name order. The browser draws every
// host as a cell of one canvas, a few hundred kilobytes for 100,000
// hosts, and lists a page of a group on a click (GET /ui/view/hosts). The
// map is served only to a session the API lets list hosts (the handler
// asks the API first, with a selector that matches nothing), and is
// refreshed when the API's watch of hosts reports a change.
//
// # Traces, captures and flows
//
// These views read APIs that a controller may not serve yet; a 404 from
// the API shows "not available on this controller". Their shapes, as the
// views read them (fields may be absent):
//
//	Trace (tenant-scoped, /apis/weft/v1/tenants/T/traces; the form POSTs one):
//	  spec:   {from: ENDPOINT, to: ENDPOINT|IP, proto: tcp|udp|icmp, dport: N, mode: probe|live}
//	  status: {phase: Pending|Running|Completed|Failed, verdict: Delivered|Dropped, reason,
//	           hops: [{host, point, verdict, detail, rule, reason, time, attrs: {KEY: VALUE}}]}
//	  point is one of source-veth, vpc-router, policy, route, encap, underlay, decap,
//	  remote-policy, deliver, drop; attrs carries e.g. vni, remoteHost, outerSrc,
//	  outerDst, dscp. A hop whose verdict or point says drop is drawn red, deliver green.
//
//	Capture (tenant-scoped, /apis/weft/v1/tenants/T/captures):
//	  spec:   {endpoint | vpc | selector: LabelSelector, filter, direction, droppedOnly,
//	           duration, count, snaplen}
//	  status: {phase, packets, bytes, hosts: [HOST], expires: RFC 3339}
//	  download: GET /apis/weft/v1/tenants/T/captures/NAME/pcapng (the merged pcapng),
//	  offered once packets > 0 or the phase is Completed.
//
//	Flows: GET /apis/weft/v1/tenants/T/flows?top=N[&endpoint=E] (controller/flowagg) →
//	  {kind: FlowList, tenant, window, items: [{vpc, src, dst, sport, dport, proto,
//	            srcEndpoint, dstEndpoint, bytes, packets, dropped, verdict: allow|drop|partial,
//	            reason, duration, start, end, sampling}]}, the top talkers by bytes; polled
//	  every 5 s.
package web
