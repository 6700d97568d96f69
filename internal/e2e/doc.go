// Package e2e holds end-to-end tests that build the weft binary and run it
// against a real controller subprocess (embedded etcd): the CLI contract,
// crash safety, admission and policy validation through the API, and, as
// root, the real data plane of a lab of network namespaces with an agent
// per host (connectivity, migration, restarts, the security policy truth
// table and its changes under live connections, QoS caps). It has no
// non-test code.
package e2e
