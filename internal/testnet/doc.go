// Package testnet builds a "data centre" out of network namespaces, for
// tests, the data plane benchmark and the demo: an underlay namespace
// holding a bridge, and one namespace per host with a veth to that bridge
// and an underlay address from TEST-NET-1 (192.0.2.0/24). Addresses exist
// only inside these namespaces, unless Options.RootLink adds a link from
// the root namespace (for a controller running there).
//
//	n, err := testnet.Build(testnet.Options{Hosts: 3}) // tests: nettest.New(t, ...)
//	defer n.Close()
//	h := n.Host(0) // h.Path, h.UnderlayIP, h.UnderlayDev
//	err = h.Do(func() error { /* runs on a thread inside h's namespace */ return nil })
//	rtt, err := testnet.Ping(ctx, n.Host(1).Path, n.Host(2).UnderlayIP)
//
// The bridge plays a physical switch: br_netfilter's iptables hooks, which
// the kernel runs on bridged frames once that module is loaded, are turned
// off in the underlay namespace (Options.BridgeNetfilter keeps them).
// Options.Direct joins exactly two hosts by one veth pair instead, the
// cheapest stand-in for a wire. Options.MTU sets the underlay MTU (e.g.
// 9000, as data centres run). Options.Control adds a control subnet on
// which the hosts reach a controller.
//
// Every namespace is named "<prefix>-...", where the default prefix
// "wftt<pid>r<random>" is unique per run. A driver under test is told to use
// the same prefix, so Close (and Remove) deletes everything by name even
// when the test failed, and Sweep removes what a crashed run with a
// default prefix left behind once its process is gone. Package nettest
// holds the testing side: New builds a Net for a test, sweeps first and
// closes it in the test's cleanup.
//
// Probes (Ping, DialTCP, ListenTCP, Hello, StartPinger) open their sockets
// inside a namespace on a locked OS thread (netnsfile.Do) and then use
// them from any goroutine. Stream measures a bulk TCP transfer between two
// namespaces with blocking sockets on locked threads (iperf3-like), and
// AddVethPair makes the plain veth pair such transfers are compared with.
package testnet
