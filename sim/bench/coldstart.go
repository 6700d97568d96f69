package bench

import (
	"context"
	"runtime"
	"time"

	"github.com/weftnet/weft/sim"
)

// ColdstartConfig configures the cold-start benchmark.
type ColdstartConfig struct {
	SimConfig
	// Policies adds security policies and endpoint labels to the state
	// (sim.Layout).
	Policies int
}

// ColdstartReport is the result of a cold-start run.
type ColdstartReport struct {
	Bench string `json:"bench"`
	sim.Report
	GoalSeconds  float64 `json:"goalSeconds"`
	GoalRSSBytes int64   `json:"goalRSSBytes"`
	CPUs         int     `json:"cpus"`
	// LoadAvg is /proc/loadavg when the run started (the machine is shared).
	LoadAvg string `json:"loadAvg"`
	// Calibration is this machine's measure, taken before the load.
	Calibration *Calibration `json:"calibration,omitempty"`
}

// Coldstart loads the state for Hosts hosts, Endpoints endpoints and VPCs
// VPCs, starts the controller replicas on it, then starts every agent at
// once and measures the time until all are programmed, and each replica's
// RSS and CPU time. Defaults: 1,000 hosts, 10 endpoints per host, 100 VPCs,
// no policies.
func Coldstart(ctx context.Context, cfg ColdstartConfig) (*ColdstartReport, error) {
	setDefault(&cfg.Hosts, 1000)
	setDefault(&cfg.Endpoints, 10*cfg.Hosts)
	setDefault(&cfg.VPCs, 100)
	rep := &ColdstartReport{Bench: "coldstart", GoalSeconds: GoalColdstartSeconds, GoalRSSBytes: GoalColdstartRSS,
		CPUs: runtime.NumCPU(), LoadAvg: loadAvg()}
	cal, err := Calibrate(ctx)
	if err != nil {
		rep.Error = err.Error()
		return rep, err
	}
	rep.Calibration = &cal
	scfg := cfg.simConfig()
	scfg.Policies = cfg.Policies
	r, err := sim.Run(ctx, sim.RunConfig{Config: scfg, Timeout: cfg.Timeout, Hold: time.Second})
	if r != nil {
		rep.Report = *r
	}
	if r == nil && err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}
