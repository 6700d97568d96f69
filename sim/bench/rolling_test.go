package bench

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/datapath"
	simdp "github.com/weftnet/weft/datapath/sim"
)

// TestRollingSmoke runs the rolling-restart benchmark at its CI size: three
// replica processes embedding a 3-member etcd cluster, 200 simulated hosts,
// every replica restarted in turn: no host is reprogrammed, no endpoint
// marked Lost, no agent gets a full snapshot, and objects written through
// one replica are read through the others.
func TestRollingSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs about 30 s")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	rep, err := Rolling(t.Context(), RollingConfig{Exec: exe, Hosts: 200, Settle: time.Second, Progress: &progress})
	t.Logf("timeline:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Failures() {
		t.Error(f)
	}
	if len(rep.Steps) != 3 {
		t.Fatalf("%d steps, want 3", len(rep.Steps))
	}
	moved := 0
	for _, s := range rep.Steps {
		moved += s.Sessions
		if s.Rehomed < s.Ready || s.Ready < s.Stopped {
			t.Errorf("step %s: stopped %s, ready %s, re-homed %s: out of order", s.Member, s.Stopped, s.Ready, s.Rehomed)
		}
	}
	// Every replica had agents when it stopped (200 hosts over 3), and
	// they connected again elsewhere.
	if moved < rep.Hosts || rep.StreamConnects < uint64(moved) {
		t.Errorf("%d agents on the stopped replicas, %d sessions after the initial ones: the roll moved too few", moved, rep.StreamConnects)
	}
	if rep.CrossReads != 18 {
		t.Errorf("%d cross-replica reads, want 18 (3 steps x 3 writers x 2 readers)", rep.CrossReads)
	}
}

// TestRollingFailures: each thing a roll must not do is a failure.
func TestRollingFailures(t *testing.T) {
	rep := &RollingReport{HostsWritten: 1, DatapathWrites: 3, LostEndpoints: 2, DeadHosts: 1, Snapshots: 4, CrossReads: 6, CrossReadFailures: 1}
	fails := strings.Join(rep.Failures(), "\n")
	for _, want := range []string{"1 hosts reprogrammed", "2 endpoints marked Lost", "1 hosts marked Dead", "4 full snapshots", "1 of 6 objects"} {
		if !strings.Contains(fails, want) {
			t.Errorf("failures %q: want %q", fails, want)
		}
	}
	if f := (&RollingReport{CrossReads: 6}).Failures(); len(f) != 0 {
		t.Errorf("a clean roll: failures %v", f)
	}
}

// TestSummariseWrites: a host whose driver is written after the mark
// counts as written, one that is not does not; without a mark every
// write counts.
func TestSummariseWrites(t *testing.T) {
	ctx := context.Background()
	drivers := []*simdp.Driver{simdp.New(simdp.Config{}), simdp.New(simdp.Config{})}
	defer func() {
		for _, d := range drivers {
			d.Close()
		}
	}()
	hosts := []haHostSpec{{Name: "a", Underlay: netip.MustParseAddr("192.0.2.1")}, {Name: "b", Underlay: netip.MustParseAddr("192.0.2.2")}}
	write := func(d *simdp.Driver, vni uint32) {
		t.Helper()
		host := datapath.HostConfig{Name: "h", UnderlayIP: netip.MustParseAddr("192.0.2.1")}
		if err := d.Set(ctx, &datapath.Desired{Host: host, VPCs: []datapath.VPC{{Tenant: "acme", Name: "main", VNI: vni}}}); err != nil {
			t.Fatal(err)
		}
	}
	write(drivers[0], 100)
	marks := []datapath.Counts{drivers[0].Counts(), drivers[1].Counts()}
	write(drivers[1], 200)
	agents := []summarisedAgent{connectedAgent{}, connectedAgent{}}
	s, err := summarise(ctx, hosts, agents, drivers, marks)
	if err != nil {
		t.Fatal(err)
	}
	if s.Written != 1 || s.Writes == 0 || !strings.HasPrefix(s.WriteSample, "b: ") {
		t.Errorf("after the mark: %+v, want host b written", s)
	}
	if s, _ := summarise(ctx, hosts, agents, drivers, nil); s.Written != 2 {
		t.Errorf("without a mark: %d hosts written, want 2", s.Written)
	}
}

// connectedAgent is an agent connected with its view applied.
type connectedAgent struct{}

func (connectedAgent) Stats() agent.Stats     { return agent.Stats{StreamConnects: 1} }
func (connectedAgent) Connected() bool        { return true }
func (connectedAgent) ViewVersion() uint64    { return 1 }
func (connectedAgent) AppliedVersion() uint64 { return 1 }

// TestPrefixLines: whole lines are copied with the prefix, however the
// writes cut them; a partial line waits for its end.
func TestPrefixLines(t *testing.T) {
	var b bytes.Buffer
	w := prefixLines(&b, "m0: ")
	for _, p := range []string{"a", "b\nc\n", "d"} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := b.String(), "m0: ab\nm0: c\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if prefixLines(nil, "x") != nil {
		t.Error("a nil log gave a writer")
	}
}
