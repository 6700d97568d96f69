package datapath_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/datapath"
)

func TestQoSEnforced(t *testing.T) {
	const g = 1_000_000_000
	for _, tc := range []struct {
		name     string
		q        *datapath.QoS
		capacity uint64
		want     *datapath.QoS
	}{
		{"none", nil, g, nil},
		{"all kept with a capacity", &datapath.QoS{MaxRateBps: 2e8, MinRateBps: 1e8, Priority: 2, DSCP: 46}, g,
			&datapath.QoS{MaxRateBps: 2e8, MinRateBps: 1e8, Priority: 2, DSCP: 46}},
		{"minimum and priority dropped without", &datapath.QoS{MaxRateBps: 2e8, MinRateBps: 1e8, Priority: 2, DSCP: 46}, 0,
			&datapath.QoS{MaxRateBps: 2e8, DSCP: 46}},
		{"priority alone is something", &datapath.QoS{Priority: 0}, g, &datapath.QoS{}},
		{"best effort is nothing", &datapath.QoS{Priority: datapath.BestEffortPriority}, g, nil},
		{"a priority without capacity is nothing", &datapath.QoS{Priority: 1}, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.q.Enforced(tc.capacity)); diff != "" {
				t.Errorf("Enforced (-want +got):\n%s", diff)
			}
		})
	}
	v := &datapath.VPCQoS{MaxRateBps: 2e8, MinRateBps: 1e8}
	if got := v.Enforced(g, false); got != nil {
		t.Errorf("VPC QoS without local endpoints = %+v, want nil", got)
	}
	if got := v.Enforced(0, true); got == nil || *got != (datapath.VPCQoS{MaxRateBps: 2e8}) {
		t.Errorf("VPC QoS without capacity = %+v, want the cap only", got)
	}
	if got := (&datapath.VPCQoS{MinRateBps: 1e8}).Enforced(0, true); got != nil {
		t.Errorf("VPC minimum without capacity = %+v, want nil", got)
	}
}

func TestNormalizeQoS(t *testing.T) {
	d := base()
	d.VPCs[0].QoS = &datapath.VPCQoS{MaxRateBps: 1_000_007}
	d.Endpoints[0].QoS = &datapath.QoS{MaxRateBps: 2_000_015, MinRateBps: 1001, DSCP: 63, Priority: 7}
	n, err := d.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if got := n.VPC(200).QoS; *got != (datapath.VPCQoS{MaxRateBps: 1_000_000}) {
		t.Errorf("VPC QoS = %+v, want the rate rounded down to whole bytes/s", got)
	}
	ep := n.Endpoints[1] // zeta/x, sorted after acme/x
	if want := (datapath.QoS{MaxRateBps: 2_000_008, MinRateBps: 1000, DSCP: 63, Priority: 7}); *ep.QoS != want {
		t.Errorf("endpoint QoS = %+v, want %+v", *ep.QoS, want)
	}
	if ep.QoS == d.Endpoints[0].QoS || n.VPC(200).QoS == d.VPCs[0].QoS {
		t.Error("Normalize shares QoS with its input, want a deep copy")
	}
	d = base()
	d.Host.CapacityBps = 500
	if _, err := d.Normalize(); err == nil {
		t.Error("Normalize accepted a capacity of 500 bit/s")
	}
	for _, bad := range []datapath.QoS{{DSCP: 64}, {Priority: 8}, {Priority: -1}, {MaxRateBps: 999}, {MaxRateBps: 1e6, MinRateBps: 2e6}, {MinRateBps: datapath.MaxRateBps + 1}} {
		d := base()
		d.Endpoints[0].QoS = &bad
		if _, err := d.Normalize(); err == nil {
			t.Errorf("Normalize accepted QoS %+v", bad)
		}
	}
}
