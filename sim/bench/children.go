package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/weftnet/weft/sim"
)

// The roles of the benchmarks' child processes: load generators that run
// in a process of their own (the weft binary's hidden sim.ChildCommand),
// so that the process under measurement counts only its own CPU and
// memory, and the two do not share one Go scheduler.
const (
	roleHeartbeatSenders = "heartbeat-senders"
	roleLookupClients    = "lookup-clients"
	roleStreamAgents     = "streamcmp-agents"
)

// ChildRoles returns the roles of the benchmarks' child processes. A
// binary that runs benchmarks passes them to sim.RunChild from its hidden
// subcommand sim.ChildCommand (a test binary from TestMain).
func ChildRoles() sim.ChildRoles {
	return sim.ChildRoles{
		roleHeartbeatSenders: sendHeartbeats,
		roleLookupClients:    runLookupClients,
		roleStreamAgents:     runStreamAgents,
		roleHAReplica:        runHAReplica,
		roleHAAgents:         runHAAgents,
		roleEtcdServer:       runEtcdServer,
	}
}

// childMsg is a line a benchmark child writes.
type childMsg struct {
	T string `json:"t"` // ready, start, stopped, done, progress, result
	// N is the host of "stopped" and the datagrams sent of "done".
	N uint64 `json:"n,omitempty"`
	// CPU is the CPU time of the senders' threads ("done" of in-process
	// heartbeat senders).
	CPU    time.Duration `json:"cpu,omitempty"`
	Line   string        `json:"line,omitempty"`   // progress
	Result *lookupResult `json:"result,omitempty"` // result
}

// childReadyTimeout bounds a child's preparation (pre-signing a pool of
// millions of datagrams takes seconds).
const childReadyTimeout = 5 * time.Minute

// startChild starts a benchmark child, in a process of this binary (which
// must run sim.RunChild with ChildRoles on sim.ChildCommand) or, with
// inProcess, in this process, and waits for its "ready".
func startChild(ctx context.Context, name, role string, spec any, inProcess bool) (*sim.Child, error) {
	cfg := sim.ChildConfig{Name: name, Role: role, Spec: spec, Roles: ChildRoles()}
	if !inProcess {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		cfg.Exe = exe
	}
	ch, err := sim.StartChild(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := ch.Await(ctx, "ready", childReadyTimeout); err != nil {
		return nil, errors.Join(err, ch.Close())
	}
	return ch, nil
}

// childLine decodes a line received from ch (open false: the channel was
// closed); the end of the child and an "error" line are errors.
func childLine(ch *sim.Child, cm sim.ChildMessage, open bool) (childMsg, error) {
	var m childMsg
	switch {
	case !open:
		<-ch.Done()
		return m, errors.Join(fmt.Errorf("%s ended early", ch.Name()), ch.Err())
	case cm.T == "error":
		return m, fmt.Errorf("%s: %s", ch.Name(), cm.Err)
	}
	return m, cm.Decode(&m)
}
