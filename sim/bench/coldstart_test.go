package bench

import (
	"context"
	"testing"
	"time"
)

// tinySim is the simulation size of the smoke tests: everything in-process.
func tinySim(t *testing.T, hosts, endpoints, vpcs int) SimConfig {
	return SimConfig{Hosts: hosts, Endpoints: endpoints, VPCs: vpcs, BackoffMin: 50 * time.Millisecond,
		Timeout: 15 * time.Second, Progress: testWriter{t}}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func TestColdstartSmoke(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policies int
	}{{"no policies", 0}, {"policies", 40}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rep, err := Coldstart(ctx, ColdstartConfig{SimConfig: tinySim(t, 30, 120, 4), Policies: tc.policies})
			if err != nil {
				t.Fatalf("Coldstart: %v", err)
			}
			if rep.Programmed != 30 || rep.ProgrammedSeconds <= 0 {
				t.Errorf("programmed %d of 30 in %v s", rep.Programmed, rep.ProgrammedSeconds)
			}
			if len(rep.Controllers) != 1 || rep.MaxControllerRSSBytes <= 0 {
				t.Errorf("controllers %+v: want one with an RSS", rep.Controllers)
			}
			// Identities are counted only with policies, about one per policy.
			if rep.Policies != tc.policies || tc.policies == 0 && rep.Identities != 0 || rep.Identities < tc.policies {
				t.Errorf("%d policies, %d identities: want %d policies and at least as many identities", rep.Policies, rep.Identities, tc.policies)
			}
		})
	}
}
