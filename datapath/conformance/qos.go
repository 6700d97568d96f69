package conformance

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/weftnet/weft/datapath"
)

// QoS, as every driver reports it in its snapshot (datapath.QoS.Enforced
// and datapath.VPCQoS.Enforced say what that is). Whether the data plane
// really holds the rates is for each driver's own tests: the linux driver
// measures them in real namespaces.

const mbit = 1_000_000

// qosState is s.full() with QoS: acme has an aggregate (acme/a2 has no QoS
// of its own, only its VPC's), zeta has none, and the host the given
// capacity.
func (s *suite) qosState(capacity uint64) *datapath.Desired {
	d := s.full()
	d.Host.CapacityBps = capacity
	d.VPCs[0].QoS = &datapath.VPCQoS{MaxRateBps: 400 * mbit, MinRateBps: 200 * mbit}
	d.Endpoints[0].QoS = &datapath.QoS{MaxRateBps: 100 * mbit, MinRateBps: 50 * mbit, Priority: 1, DSCP: 46}
	d.Endpoints[2].QoS = &datapath.QoS{Priority: 3, DSCP: 10}
	d.Endpoints[3].QoS = &datapath.QoS{MaxRateBps: 50 * mbit}
	return d
}

func testQoS(t *testing.T, s *suite) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"SetAndSnapshot", testQoSSet},
		{"Transitions", testQoSTransitions},
		{"Invalid", testQoSInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, s) })
	}
}

// checkQoS is check plus: no endpoint reports a QoS error.
func (s *suite) checkQoS(t *testing.T, d *datapath.Desired) {
	t.Helper()
	s.check(t, d, nil)
	for _, e := range d.Endpoints {
		if st, _ := s.d.Status(e.ID); st.QoSErr != "" {
			t.Errorf("Status(%q).QoSErr = %q, want none", e.ID, st.QoSErr)
		}
	}
}

func testQoSSet(t *testing.T, s *suite) {
	d := s.qosState(1000 * mbit)
	someWrites(t, "first Set with QoS", s.set(t, d))
	s.checkQoS(t, d)
	noWrites(t, "second Set of the same QoS", s.set(t, d))
	// Rates are kept in whole bytes per second.
	d.Endpoints[3].QoS.MaxRateBps = 50*mbit + 7
	noWrites(t, "Set with a rate that differs below a byte per second", s.set(t, d))
	s.checkQoS(t, d)
}

// testQoSTransitions replays QoS states in order, then shuffled, checking
// each snapshot and that a repeated Set writes nothing.
func testQoSTransitions(t *testing.T, s *suite) {
	states := map[string]*datapath.Desired{"none": s.full(), "full": s.qosState(1000 * mbit)}
	add := func(name string, change func(d *datapath.Desired)) {
		d := s.qosState(1000 * mbit)
		change(d)
		states[name] = d
	}
	add("caps changed", func(d *datapath.Desired) {
		d.Endpoints[0].QoS.MaxRateBps = 200 * mbit
		d.Endpoints[3].QoS.MaxRateBps = 0
		d.VPCs[0].QoS.MaxRateBps = 0
	})
	add("marking and priorities changed", func(d *datapath.Desired) {
		d.Endpoints[0].QoS.DSCP = 0
		d.Endpoints[2].QoS = &datapath.QoS{Priority: 0, DSCP: 26}
		d.Endpoints[1].QoS = &datapath.QoS{Priority: datapath.BestEffortPriority, DSCP: 46}
	})
	add("minimums changed", func(d *datapath.Desired) {
		d.VPCs[0].QoS.MinRateBps = 0
		d.Endpoints[0].QoS.MinRateBps = 80 * mbit
		d.Endpoints[3].QoS.MinRateBps = 10 * mbit
	})
	add("no VPC QoS", func(d *datapath.Desired) { d.VPCs[0].QoS = nil })
	add("endpoint QoS only on one", func(d *datapath.Desired) {
		d.VPCs[0].QoS = nil
		d.Endpoints[0].QoS, d.Endpoints[2].QoS = nil, nil
	})
	add("no capacity", func(d *datapath.Desired) { d.Host.CapacityBps = 0 })
	add("capacity changed", func(d *datapath.Desired) { d.Host.CapacityBps = 10_000 * mbit })
	add("endpoint gone", func(d *datapath.Desired) { d.Endpoints = d.Endpoints[1:] })
	order := []string{"none", "full", "caps changed", "marking and priorities changed", "minimums changed",
		"no VPC QoS", "endpoint QoS only on one", "no capacity", "capacity changed", "endpoint gone", "full", "none"}
	r := rand.New(rand.NewPCG(3, 4))
	for range 12 {
		order = append(order, order[r.IntN(len(order)-1)+1])
	}
	for i, name := range order {
		d := states[name]
		s.set(t, d)
		s.checkQoS(t, d)
		noWrites(t, fmt.Sprintf("step %d (%s): repeated Set", i, name), s.set(t, d))
		if t.Failed() {
			t.Fatalf("step %d (%s) failed", i, name)
		}
	}
}

func testQoSInvalid(t *testing.T, s *suite) {
	good := s.qosState(1000 * mbit)
	s.set(t, good)
	for _, tc := range []struct {
		name   string
		change func(d *datapath.Desired)
	}{
		{"DSCP over 63", func(d *datapath.Desired) { d.Endpoints[0].QoS.DSCP = 64 }},
		{"priority over 7", func(d *datapath.Desired) { d.Endpoints[0].QoS.Priority = 8 }},
		{"negative priority", func(d *datapath.Desired) { d.Endpoints[0].QoS.Priority = -1 }},
		{"minimum above maximum", func(d *datapath.Desired) { d.Endpoints[0].QoS.MinRateBps = 200 * mbit }},
		{"rate below 1 kbit/s", func(d *datapath.Desired) { d.Endpoints[3].QoS.MaxRateBps = 999 }},
		{"VPC minimum above maximum", func(d *datapath.Desired) { d.VPCs[0].QoS.MinRateBps = 500 * mbit }},
		{"VPC rate above 100 Tbit/s", func(d *datapath.Desired) { d.VPCs[0].QoS.MaxRateBps = datapath.MaxRateBps + 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := s.qosState(1000 * mbit)
			tc.change(d)
			before := s.counter.Counts()
			err := s.d.Set(ctxT(t, opTimeout), d)
			if !errors.Is(err, datapath.ErrInvalid) {
				t.Errorf("Set = %v, want ErrInvalid", err)
			}
			noWrites(t, "rejected Set", s.counter.Counts().Sub(before))
			s.checkQoS(t, good)
		})
	}
}
