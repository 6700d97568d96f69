// Package conformance is the test suite every datapath.Driver must pass.
//
// A driver's own test calls Run with a constructor that returns a fresh
// driver on a fresh host, and optionally a Prober that sends real (or
// simulated) packets from inside a local endpoint:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, func(t *testing.T) (datapath.Driver, datapath.HostConfig) {
//			d := sim.New(sim.Config{})
//			t.Cleanup(func() { d.Close() })
//			return d, host
//		}, prober)
//	}
//
// The suite needs the driver to implement datapath.Counter (to prove that a
// repeated Set writes nothing) and datapath.Snapshotter (to compare what is
// programmed with what was asked).
package conformance
