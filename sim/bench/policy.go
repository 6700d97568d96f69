package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/weftnet/weft/internal/netnsfile"
)

// PolicyConfig configures the security policy benchmark (Policy). Counts
// left at zero take their default; a phase not listed in Phases is
// skipped.
type PolicyConfig struct {
	// SimConfig sizes the "sim" phase (Hosts default 10,000, Endpoints 2
	// per host, VPCs 100) and carries the run's Progress and Logger.
	SimConfig
	// Phases to run, in this order: "rulecost", "kernel", "sim" (default:
	// all). The first two need root.
	Phases []string
	// RuleCounts are the rules in the VPC of each pair of the rulecost
	// phase (default 10, 1,000, 10,000 and 100,000), measured in Rounds
	// interleaved rounds (default 15) of Duration per rule count and mode
	// (default 1 s).
	RuleCounts []int
	Rounds     int
	Duration   time.Duration
	// KernelHosts and KernelEndpoints size the kernel phase (default 2
	// hosts and 1,000 endpoints, in VPCs of 100); KernelResync is the
	// linux driver's EndpointResync (0: the driver's default, what `weft agent` runs).
	KernelHosts, KernelEndpoints int
	KernelResync                 time.Duration
	// Changes is the number of policies created one at a time in the
	// kernel and sim phases (default 50); WaitTimeout bounds the wait for
	// one to be enforced on every host it affects (default 10 s).
	Changes     int
	WaitTimeout time.Duration
	// Settle is the sim phase's pause after the cold start (default 5 s;
	// negative: none).
	Settle time.Duration
	// NetnsDir holds the named namespaces (default /var/run/netns).
	NetnsDir string
}

// Policy phases.
const (
	PhaseRuleCost = "rulecost"
	PhaseKernel   = "kernel"
	PhaseSim      = "sim"
)

// Goals of the policy benchmark (issue 11): the per-packet cost is flat
// in the rule count, and a change is enforced everywhere quickly.
const (
	GoalRuleCostRatio     = 0.95
	GoalPolicyChangeP99Ms = 100.0
)

func (c *PolicyConfig) setDefaults() {
	if len(c.Phases) == 0 {
		c.Phases = []string{PhaseRuleCost, PhaseKernel, PhaseSim}
	}
	if len(c.RuleCounts) == 0 {
		c.RuleCounts = []int{10, 1000, 10_000, 100_000}
	}
	setDefault(&c.Rounds, 15)
	setDefault(&c.Duration, time.Second)
	setDefault(&c.KernelHosts, 2)
	setDefault(&c.KernelEndpoints, 1000)
	setDefault(&c.Changes, 50)
	setDefault(&c.WaitTimeout, 10*time.Second)
	setDefault(&c.Settle, 5*time.Second)
	setDefault(&c.Hosts, 10_000)
	setDefault(&c.Endpoints, 2*c.Hosts)
	setDefault(&c.VPCs, 100)
	setDefault(&c.NetnsDir, netnsfile.DefaultDir)
}

func (c *PolicyConfig) validate() error {
	for _, p := range c.Phases {
		switch p {
		case PhaseRuleCost, PhaseKernel, PhaseSim:
		default:
			return fmt.Errorf("policy: unknown phase %q", p)
		}
	}
	switch {
	case c.Rounds < 1 || c.Changes < 1 || c.KernelHosts < 1 || c.KernelEndpoints < 1:
		return fmt.Errorf("policy: Rounds %d, Changes %d, KernelHosts %d, KernelEndpoints %d: want ≥ 1", c.Rounds, c.Changes, c.KernelHosts, c.KernelEndpoints)
	case c.KernelEndpoints > 25_000:
		return errors.New("policy: at most 25,000 kernel endpoints (VPCs of 100, one /16 each)")
	case c.Duration < 100*time.Millisecond:
		return fmt.Errorf("policy: Duration %v: want ≥ 100ms", c.Duration)
	case len(c.RuleCounts) < 2:
		return errors.New("policy: want at least two rule counts to compare")
	}
	for _, n := range c.RuleCounts {
		if n < 2 || n > 1_000_000 {
			return fmt.Errorf("policy: %d rules: want 2..1,000,000", n)
		}
	}
	return nil
}

// PolicyReport is the result of a Policy run.
type PolicyReport struct {
	Bench string      `json:"bench"`
	Env   DatapathEnv `json:"env"`
	Took  string      `json:"took"`
	Goals PolicyGoals `json:"goals"`
	// RuleCost: the per-packet cost against the number of rules.
	RuleCost *RuleCostPart `json:"ruleCost,omitempty"`
	// Kernel and Sim: a policy change, API write to enforced on every
	// host it affects, with the linux driver and with the sim driver.
	Kernel *PolicyChangePart `json:"kernel,omitempty"`
	Sim    *PolicyChangePart `json:"sim,omitempty"`
}

// PolicyGoals are the goals the figures are compared with.
type PolicyGoals struct {
	RuleCostRatio float64 `json:"ruleCostRatio"`
	ChangeP99Ms   float64 `json:"changeP99Ms"`
}

// Policy measures, in one run: whether the cost of a packet grows with the
// number of rules (rulecost: two hosts in network namespaces with the
// linux driver, no controller); and how long a policy change takes from
// the API write until every host it affects enforces it, through a real
// controller, with agents on the linux driver (kernel) and with simulated
// hosts on the sim driver (sim, package sim's machinery, as `weft bench
// program`). Every namespace it makes is deleted by name when it returns.
func Policy(ctx context.Context, cfg PolicyConfig) (*PolicyReport, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	rep := &PolicyReport{Bench: "policy", Env: DatapathEnv{Kernel: kernelRelease(), CPUs: runtime.NumCPU(), LoadStart: loadAvg1()},
		Goals: PolicyGoals{RuleCostRatio: GoalRuleCostRatio, ChangeP99Ms: GoalPolicyChangeP99Ms}}
	dcfg := &DatapathConfig{NetnsDir: cfg.NetnsDir, Progress: cfg.Progress, Logger: cfg.Logger}
	dcfg.setDefaults()
	r := newDPRun(dcfg, "policy", start)
	defer r.status.Close()
	var err error
	for _, p := range cfg.Phases {
		if err = ctx.Err(); err != nil {
			break
		}
		if p != PhaseSim && os.Geteuid() != 0 {
			err = fmt.Errorf("policy %s: needs root (creates network namespaces)", p)
			break
		}
		switch p {
		case PhaseRuleCost:
			rep.RuleCost, err = r.ruleCost(ctx, &cfg)
		case PhaseKernel:
			rep.Kernel, err = r.policyKernel(ctx, &cfg)
		case PhaseSim:
			rep.Sim, err = policySim(ctx, &cfg, r.status)
		}
		if err != nil {
			err = fmt.Errorf("policy %s: %w", p, err)
			break
		}
	}
	rep.Took = time.Since(start).Round(time.Millisecond).String()
	rep.Env.LoadEnd = loadAvg1()
	return rep, err
}

// spreadOf returns the median, smallest and largest of v.
func spreadOf(v []float64) (med, lo, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	return round3(median(v)), round3(slices.Min(v)), round3(slices.Max(v))
}
