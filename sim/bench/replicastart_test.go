package bench

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestReplicaStartSmoke runs the replica-start benchmark small: 2,000
// endpoints loaded, a replica process started once embedding the etcd
// that holds them and once as a client of an etcd in another process;
// each serves the endpoints it was loaded with.
func TestReplicaStartSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	rep, err := ReplicaStart(t.Context(), ReplicaStartConfig{Exec: exe, Endpoints: 2000, Starts: 1, NoCalibration: true, Progress: &progress})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Starts) != 2 || rep.Starts[0].Shape != ShapeEmbedded || rep.Starts[1].Shape != ShapeClient {
		t.Fatalf("starts %+v, want one embedded then one client", rep.Starts)
	}
	for _, r := range rep.Starts {
		// Tenant t0 holds every endpoint of a layout with at most 100 VPCs.
		if r.Listed != 2000 {
			t.Errorf("%s: the first list returned %d endpoints, want 2000", r.Shape, r.Listed)
		}
		if r.Ready <= 0 || r.Serving < r.Ready || r.CPU <= 0 || r.RSS <= 0 {
			t.Errorf("%s: ready %s, serving %s, CPU %s, RSS %d: not measured", r.Shape, r.Ready, r.Serving, r.CPU, r.RSS)
		}
	}
	if s := rep.Shapes[ShapeClient]; s.Starts != 1 || s.Median != rep.Starts[1].Serving {
		t.Errorf("client summary %+v", s)
	}
	if rep.EtcdRSS <= 0 || !strings.Contains(progress.String(), "setup: 2000 endpoints") {
		t.Errorf("etcd RSS %d; progress without the load's lines", rep.EtcdRSS)
	}
}

// TestReplicaStartValidate: bad settings are refused before anything starts.
func TestReplicaStartValidate(t *testing.T) {
	for name, cfg := range map[string]ReplicaStartConfig{
		"no binary":     {Endpoints: 10},
		"unknown shape": {Exec: "x", Shapes: []string{"external"}},
		"no starts":     {Exec: "x", Starts: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ReplicaStart(t.Context(), cfg); err == nil {
				t.Error("no error")
			}
		})
	}
}
