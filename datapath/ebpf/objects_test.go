package ebpf

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/weftnet/weft/internal/testnet/nettest"
)

// TestVerifierAcceptsPrograms loads every program of the embedded object
// into this kernel (with private, unpinned maps).
func TestVerifierAcceptsPrograms(t *testing.T) {
	nettest.RequireRoot(t)
	spec, err := loadWeft()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	if len(spec.Programs) != 4 {
		t.Errorf("object has %d programs, want 4", len(spec.Programs))
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}})
	if err != nil {
		t.Fatalf("load: %+v", err)
	}
	defer coll.Close()
	for name, p := range coll.Programs {
		t.Run(name, func(t *testing.T) {
			if p.Type() != ebpf.SchedCLS {
				t.Errorf("type %v, want SchedCLS", p.Type())
			}
			t.Logf("verifier: %s", p.VerifierLog)
		})
	}
}
