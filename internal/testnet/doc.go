// Package testnet builds a test "data centre" out of network namespaces:
// an underlay namespace holding a bridge, and one namespace per host with a
// veth to that bridge and an underlay address from TEST-NET-1
// (192.0.2.0/24). Addresses exist only inside these namespaces.
//
//	n := testnet.New(t, testnet.Options{Hosts: 3})
//	h := n.Host(0) // h.Path, h.UnderlayIP, h.UnderlayDev
//	err := h.Do(func() error { /* runs on a thread inside h's namespace */ return nil })
//	rtt, err := testnet.Ping(ctx, n.Host(1).Path, n.Host(2).UnderlayIP)
//
// Every namespace is named "<prefix>-...", where the default prefix
// "wftt<pid>r<random>" is unique per run. A driver under test is told to use
// the same prefix, so the cleanup New registers deletes everything by name
// even when the test failed, and Sweep (called by New) removes what a
// crashed run left behind once its process is gone.
//
// Probes (Ping, DialTCP, ListenTCP, Hello) open their sockets inside a
// namespace on a locked OS thread and then use them from any goroutine; Exec
// runs a program inside one. Tests using this package need root and skip
// otherwise.
package testnet
