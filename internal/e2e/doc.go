// Package e2e holds end-to-end tests that build the weft binary and run it
// against a real controller subprocess (embedded etcd): the CLI contract,
// crash safety, admission and policy validation through the API, and, as
// root, the real data plane of a lab of network namespaces with an agent
// per host (connectivity, migration, restarts, the security policy truth
// table and its changes under live connections, QoS caps), and the
// controller and agents with only the privileges their systemd units in
// deploy/ give them (user, capabilities, no_new_privs; under setpriv). It
// has no non-test code.
package e2e
