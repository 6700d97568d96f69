package agent

import (
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/datapath"
)

// The data plane names a trace's hops with its own constants (it does
// not import the API); the agent passes them to the controller as they
// are. Both vocabularies must name the same points in the same order.
func TestHopNamesMatchTheAPI(t *testing.T) {
	pairs := []struct{ dp, api string }{
		{datapath.HopSourceVeth, apiv1.HopSourceVeth},
		{datapath.HopVPCRouter, apiv1.HopVPCRouter},
		{datapath.HopPolicy, apiv1.HopPolicy},
		{datapath.HopRoute, apiv1.HopRoute},
		{datapath.HopEncap, apiv1.HopEncap},
		{datapath.HopUnderlay, apiv1.HopUnderlay},
		{datapath.HopDecap, apiv1.HopDecap},
		{datapath.HopRemotePolicy, apiv1.HopRemotePolicy},
		{datapath.HopDeliver, apiv1.HopDeliver},
		{datapath.HopDrop, apiv1.HopDrop},
	}
	prev := 0
	for _, p := range pairs {
		if p.dp != p.api {
			t.Errorf("datapath names hop %q, the API %q", p.dp, p.api)
		}
		r := apiv1.HopRank(p.dp)
		if r == 0 {
			t.Errorf("hop %q has no rank in the API", p.dp)
		}
		if r < prev {
			t.Errorf("hop %q ranks %d, before the previous hop's %d", p.dp, r, prev)
		}
		prev = r
	}
}
