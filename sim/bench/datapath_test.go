package bench

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDatapathSmoke runs every phase of the data plane benchmark at a tiny
// size, with both drivers, so that CI exercises it. It checks that the run
// works and that the figures are consistent, not how fast anything is.
func TestDatapathSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the datapath benchmark creates network namespaces, veths and VXLAN devices")
	}
	off := false
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	rep, err := Datapath(ctx, DatapathConfig{Datapaths: []string{DatapathLinux, DatapathEBPF},
		Rounds: 1, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond, Tunings: &off, LatencyDuration: 50 * time.Millisecond,
		UnderlayMTUs: []int{1500}, Attach: 3, Peers: 3, Resync: 4, ResyncVPCs: 2, PingInterval: 5 * time.Millisecond,
		EBPFFlowSampling: []uint32{1, 0}, EBPFUnderlayXDP: true, Progress: t.Output(),
	})
	if err != nil {
		t.Fatalf("Datapath: %v", err)
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("report:\n%s", b)

	if rep.Tput == nil || len(rep.Tput.Final) != 4 {
		t.Fatalf("throughput: %+v, want a final result per driver and ebpf variant", rep.Tput)
	}
	// Then once more with XDP_PASS on the underlay devices.
	if f := rep.Tput.Final[3]; f.Datapath != DatapathEBPF || f.Variant != "XDP_PASS on the underlay, flow sampling 1 in 1" || f.ToFirstVariant <= 0 || f.OverlayGbps <= 0 {
		t.Errorf("throughput final 3 = %+v, want the ebpf driver with XDP_PASS on the underlay, compared with the first variant", f)
	}
	// The ebpf driver with flow sampling 1 in 1, then without.
	if f := rep.Tput.Final[2]; f.Datapath != DatapathEBPF || f.Variant != "no flow sampling" || f.FlowSampling == nil || *f.FlowSampling != 0 ||
		f.ToFirstVariant <= 0 || f.OverlayGbps <= 0 {
		t.Errorf("throughput final 2 = %+v, want the ebpf driver without flow sampling, compared with the first variant", f)
	}
	if f := rep.Tput.Final[1]; f.Variant != "flow sampling 1 in 1" || f.FlowSampling == nil || *f.FlowSampling != 1 || f.ToFirstVariant != 0 {
		t.Errorf("throughput final 1 = %+v, want the ebpf driver with flow sampling 1 in 1", f)
	}
	for i, dp := range []string{DatapathLinux, DatapathEBPF} {
		f := rep.Tput.Final[i]
		if f.Datapath != dp || f.VethGbps <= 0 || f.OverlayGbps <= 0 || f.OverlayMTU != 1450 {
			t.Errorf("throughput final %d = %+v, want %s's and the veth pair carrying data with an overlay MTU of 1450", i, f, dp)
		}
		if a := rep.Attach[i]; a.Datapath != dp || a.Endpoints != 3 || len(a.Successive) == 0 || a.Successive[0].PerSec <= 0 || a.BatchPerSec <= 0 || a.BatchWrites.Total() == 0 {
			t.Errorf("attach %s = %+v", dp, a)
		}
		if fp := rep.First[i]; fp.Datapath != dp || fp.Lost != 0 || fp.P50Ms <= 0 || fp.Misses < 3 {
			t.Errorf("first packet = %+v, want %s's 3 peers answered, none lost", fp, dp)
		}
		if rs := rep.Resync[i]; rs.Datapath != dp || rs.Writes.Total() != 0 || rs.PingSent == 0 || rs.PingLost != 0 {
			t.Errorf("resync = %+v, want %s with no writes and no lost ping", rs, dp)
		}
	}
	if l := rep.Latency; l == nil || len(l.Paths) != 5 || l.Paths[3].Path != "overlay ebpf (no flow sampling)" || l.Paths[3].Transactions == 0 || l.Paths[3].P99Us <= 0 ||
		l.Paths[4].Transactions == 0 {
		t.Errorf("latency = %+v, want the veth pair and every overlay measured", l)
	}
	leftOver(t)
}

// TestDatapathCancelCleansUp cancels a run in the middle of its first
// phase: it must return the cancellation and leave no namespace behind.
func TestDatapathCancelCleansUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the datapath benchmark creates network namespaces, veths and VXLAN devices")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	off := false
	// The first progress line comes while streams run: cancel there.
	w := writerFunc(func(p []byte) (int, error) {
		cancel()
		return len(p), nil
	})
	_, err := Datapath(ctx, DatapathConfig{Phases: []string{PhaseThroughput}, Rounds: 50, Tunings: &off, Progress: w})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Datapath after cancel: %v, want context.Canceled", err)
	}
	leftOver(t)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// leftOver fails the test for every namespace and ebpf pin directory of
// this process's runs.
func leftOver(t *testing.T) {
	t.Helper()
	pins, _ := os.ReadDir("/sys/fs/bpf/weft")
	for _, e := range pins {
		if ownedByThisProcess(e.Name()) {
			t.Errorf("pins %s left behind", e.Name())
		}
	}
	names, err := os.ReadDir("/var/run/netns")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range names {
		if ownedByThisProcess(e.Name()) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
}

func ownedByThisProcess(name string) bool {
	return strings.HasPrefix(name, "wftt"+strconv.Itoa(os.Getpid())+"r")
}

// TestDatapathPrint runs the full benchmark when DP_PRINT is set (see
// envDatapathConfig for the knobs) and prints the report.
func TestDatapathPrint(t *testing.T) {
	if os.Getenv("DP_PRINT") == "" {
		t.Skip("set DP_PRINT=1 to run the full datapath benchmark")
	}
	cfg := DatapathConfig{Rounds: envInt("DP_ROUNDS", 0), Attach: envInt("DP_ATTACH", 0), Peers: envInt("DP_PEERS", 0),
		Resync: envInt("DP_RESYNC", 0), ResyncVPCs: envInt("DP_RESYNC_VPCS", 0), Tool: os.Getenv("DP_TOOL"),
		PinCPUs: os.Getenv("DP_PIN") != "", CongestionControl: os.Getenv("DP_CC"), Progress: os.Stdout}
	if v := envInt("DP_SECS_MS", 0); v > 0 {
		cfg.Duration = time.Duration(v) * time.Millisecond
	}
	if p := os.Getenv("DP_PHASES"); p != "" {
		cfg.Phases = strings.Split(p, ",")
	}
	if p := os.Getenv("DP_DATAPATHS"); p != "" {
		cfg.Datapaths = strings.Split(p, ",")
	}
	if p := os.Getenv("DP_EBPF_SAMPLING"); p != "" {
		for _, f := range strings.Split(p, ",") {
			v, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				t.Fatalf("DP_EBPF_SAMPLING: %v", err)
			}
			cfg.EBPFFlowSampling = append(cfg.EBPFFlowSampling, uint32(v))
		}
	}
	if os.Getenv("DP_NO_TUNING") != "" {
		off := false
		cfg.Tunings = &off
	}
	if m := os.Getenv("DP_MTUS"); m != "" {
		for _, f := range strings.Split(m, ",") {
			var v int
			_ = json.Unmarshal([]byte(f), &v)
			cfg.UnderlayMTUs = append(cfg.UnderlayMTUs, v)
		}
	}
	if f := os.Getenv("DP_CPUPROFILE"); f != "" {
		w, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(w); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := Datapath(t.Context(), cfg)
	b, _ := json.MarshalIndent(rep, "", "  ")
	if f := os.Getenv("DP_OUT"); f != "" {
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Error(err)
		}
	}
	t.Logf("%s\nerr: %v", b, err)
	if err != nil {
		t.Error(err)
	}
}
