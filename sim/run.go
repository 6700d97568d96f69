package sim

import (
	"context"
	"fmt"
	"time"
)

// RunConfig configures Run: a cluster, then how long to watch it.
type RunConfig struct {
	Config
	// Timeout bounds the wait for every agent to be programmed (default 10 min).
	Timeout time.Duration
	// Hold keeps the agents running after they are all programmed, to
	// measure heartbeats and lookups in steady state (default 5 s).
	Hold time.Duration
	// LookupRate is how many packets to random addresses of their subnet
	// random agents send per second during Hold (each a driver miss, so a
	// UDP lookup unless the answer is cached; default 0).
	LookupRate int
}

// Report is the result of a Run.
type Report struct {
	Hosts     int `json:"hosts"`
	Endpoints int `json:"endpoints"`
	VPCs      int `json:"vpcs"`
	// Policies loaded, and the security identities of the endpoints
	// (counted only with policies).
	Policies   int `json:"policies,omitempty"`
	Identities int `json:"identities,omitempty"`
	Replicas   int `json:"replicas"`
	AgentProcs int `json:"agentProcs"`

	// SetupSeconds is the bulk load of the state into etcd;
	// ReplicaStartSeconds the replicas' start on it (loading the cache,
	// compiling every view).
	SetupSeconds        float64 `json:"setupSeconds"`
	ReplicaStartSeconds float64 `json:"replicaStartSeconds"`
	// ProgrammedSeconds is the time from the agents' start to the last
	// agent programmed (0 when not all were: see Programmed and Error).
	ProgrammedSeconds float64 `json:"programmedSeconds"`
	// AgentStartSeconds is the longest time one agent process took to
	// start its agents (the simulator's own cost, part of ProgrammedSeconds).
	AgentStartSeconds float64 `json:"agentStartSeconds"`
	Connected         int     `json:"connected"`
	Programmed        int     `json:"programmed"`

	// Heartbeats: sent by the agents and processed by the replicas
	// during Hold (both counted after the agents were all programmed).
	// HeartbeatLoss is the datagrams the kernel dropped at the replicas'
	// southbound sockets (receive buffer full) during Hold per heartbeat
	// sent: what was lost, counted where it is lost. Processed against
	// sent does not give it: a replica still working through the queue
	// the connect storm left (ReplicaQueuedBytes when Hold began)
	// processes more heartbeats during Hold than were sent in it.
	HoldSeconds         float64 `json:"holdSeconds"`
	HeartbeatsSent      uint64  `json:"heartbeatsSent"`
	HeartbeatsProcessed uint64  `json:"heartbeatsProcessed"`
	ReplicaSocketDrops  uint64  `json:"replicaSocketDrops"`
	ReplicaQueuedBytes  uint64  `json:"replicaQueuedBytesAtHold"`
	HeartbeatLoss       float64 `json:"heartbeatLoss"`
	// Lookups during Hold: queries the agents sent, answers the replicas
	// gave (found, not found) and answers the agents applied.
	LookupQueries       uint64 `json:"lookupQueries"`
	LookupsFound        uint64 `json:"lookupsAnsweredFound"`
	LookupsNotFound     uint64 `json:"lookupsAnsweredNotFound"`
	AgentAnswersApplied uint64 `json:"agentAnswersApplied"`

	// Controllers is each replica's RSS and CPU seconds at the end.
	Controllers []ReplicaUsage `json:"controllers"`
	// MaxControllerRSSBytes is the largest replica RSS.
	MaxControllerRSSBytes int64  `json:"maxControllerRSSBytes"`
	Error                 string `json:"error,omitempty"`
}

// Run starts a cluster, starts every agent at once, waits until all are
// programmed, holds for cfg.Hold and reports. Everything is stopped before
// it returns. A report is returned also with an error, holding what was
// measured.
func Run(ctx context.Context, cfg RunConfig) (rep *Report, err error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Hold == 0 {
		cfg.Hold = 5 * time.Second
	}
	c, err := New(cfg.Config)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	rep = &Report{Hosts: cfg.Hosts, Endpoints: cfg.Endpoints, VPCs: cfg.VPCs, Policies: cfg.Policies, Identities: c.Identities,
		Replicas: c.cfg.Replicas, AgentProcs: c.cfg.Procs,
		SetupSeconds: c.SetupDuration.Seconds(), ReplicaStartSeconds: c.ReplicaStartDuration.Seconds()}
	var before *Snapshot
	holdStart := time.Now()
	finish := func(err error) (*Report, error) {
		if len(c.groups) > 0 {
			after, serr := c.Snapshot(ctx)
			if serr == nil {
				s := after.Agents
				rep.Connected, rep.Programmed = s.Connected, s.Programmed
				if before != nil {
					b := before.Agents
					rep.HoldSeconds = time.Since(holdStart).Seconds()
					rep.HeartbeatsSent = s.HeartbeatsSent - b.HeartbeatsSent
					rep.HeartbeatsProcessed = uint64(after.ControllerHeartbeats - before.ControllerHeartbeats)
					rep.ReplicaSocketDrops = after.ReplicaUDP.Drops - before.ReplicaUDP.Drops
					rep.ReplicaQueuedBytes = before.ReplicaUDP.Queued
					rep.HeartbeatLoss = heartbeatLoss(rep.HeartbeatsSent, rep.ReplicaSocketDrops)
					rep.LookupQueries = s.LookupQueries - b.LookupQueries
					rep.LookupsFound = uint64(after.LookupsFound - before.LookupsFound)
					rep.LookupsNotFound = uint64(after.LookupsNotFound - before.LookupsNotFound)
					rep.AgentAnswersApplied = s.AnswersFound + s.AnswersMissing - b.AnswersFound - b.AnswersMissing
				}
			} else if err == nil {
				err = serr
			}
		}
		rep.AgentStartSeconds = c.AgentStartDuration().Seconds()
		rep.Controllers = c.Usage()
		for _, u := range rep.Controllers {
			rep.MaxControllerRSSBytes = max(rep.MaxControllerRSSBytes, u.RSSBytes)
		}
		if err != nil {
			rep.Error = err.Error()
		}
		return rep, err
	}
	if _, err := c.StartAgents(ctx); err != nil {
		return finish(err)
	}
	d, err := c.WaitProgrammed(ctx, cfg.Timeout)
	if err != nil {
		return finish(err)
	}
	rep.ProgrammedSeconds = d.Seconds()
	c.prog("all %d agents programmed %.3fs after they started", cfg.Hosts, d.Seconds())
	snap, err := c.Snapshot(ctx)
	if err != nil {
		return finish(err)
	}
	before, holdStart = &snap, time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	holdEnd := time.Now().Add(cfg.Hold)
	for time.Now().Before(holdEnd) {
		if cfg.LookupRate > 0 {
			if err := c.Lookups(cfg.LookupRate); err != nil {
				return finish(err)
			}
		}
		select {
		case <-ctx.Done():
			return finish(ctx.Err())
		case <-t.C:
		}
		c.progressLine(c.Stats())
	}
	return finish(nil)
}

// String is a one-line summary.
func (r *Report) String() string {
	return fmt.Sprintf("%d hosts, %d endpoints, %d VPCs: programmed %d/%d in %.3fs", r.Hosts, r.Endpoints, r.VPCs,
		r.Programmed, r.Hosts, r.ProgrammedSeconds)
}

// heartbeatLoss is the datagrams dropped per heartbeat sent; 0 without
// heartbeats.
func heartbeatLoss(sent, dropped uint64) float64 {
	if sent == 0 {
		return 0
	}
	return float64(dropped) / float64(sent)
}
