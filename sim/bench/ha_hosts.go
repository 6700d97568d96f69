package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/agent"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller/secrets"
	"github.com/weftnet/weft/datapath"
	simdp "github.com/weftnet/weft/datapath/sim"
	"github.com/weftnet/weft/sim"
)

// The simulated hosts of an HA run: enrolled through the API like real
// ones, their agents (package agent, sim driver) run in one child process
// and stream from the replicas, moving to another when theirs fails or is
// cut off. At the end each must hold, applied, a view of exactly the
// endpoints the API lists on it.

// haMaxHosts bounds HAConfig.Hosts: the agents run in one process, with
// a config stream and a UDP socket each (20,000 open files at most).
const haMaxHosts = 9000

// roleHAAgents runs the simulated hosts.
const roleHAAgents = "ha-agents"

// haAgentsSpec is the spec of the hosts' child.
type haAgentsSpec struct {
	// Replicas are the replicas' southbound addresses.
	Replicas []string     `json:"replicas"`
	Hosts    []haHostSpec `json:"hosts"`
	// APIs, if set, are the replicas' API addresses (plain HTTP): the
	// agents report their endpoints' status through them, as real ones
	// do, moving to the next when one fails.
	APIs []string `json:"apis,omitempty"`
}

// haHostSpec is one enrolled host.
type haHostSpec struct {
	Name     string     `json:"name"`
	Key      []byte     `json:"key"`
	Underlay netip.Addr `json:"underlay"`
	// Endpoints, if set, is how many endpoints the host must hold to
	// count as programmed in a "summary".
	Endpoints int `json:"endpoints,omitempty"`
}

// haHostState is a host as its agent holds it.
type haHostState struct {
	Name      string `json:"name"`
	Connected bool   `json:"connected,omitempty"`
	View      uint64 `json:"view,omitempty"`
	Applied   uint64 `json:"applied,omitempty"`
	// Endpoints are the IDs ("tenant/name") of the endpoints in its
	// driver, sorted.
	Endpoints []string `json:"endpoints,omitempty"`
}

// haAgentsMsg is a line of the hosts' child: "ready"; "stats" once a
// second; "state", the answer to the command "state"; "marked", the
// answer to "mark" (each driver's write counts are taken as the baseline
// of the summaries); "summary", the answer to "summary".
type haAgentsMsg struct {
	T           string        `json:"t"`
	Connected   int           `json:"connected,omitempty"`
	StreamsLost uint64        `json:"streamsLost,omitempty"`
	Hosts       []haHostState `json:"hosts,omitempty"`
	Summary     *hostsSummary `json:"summary,omitempty"`
}

// hostsSummary is what a group of simulated hosts did, in a few numbers.
type hostsSummary struct {
	Hosts     int `json:"hosts"`
	Connected int `json:"connected"`
	// Programmed counts the hosts connected, holding an applied view with
	// the endpoints their spec says.
	Programmed int `json:"programmed"`
	// Written counts the hosts whose driver was written since the mark
	// (since it was made without one), Writes the writes, WriteSample
	// one such host's writes.
	Written     int    `json:"written"`
	Writes      uint64 `json:"writes"`
	WriteSample string `json:"writeSample,omitempty"`
	// StreamConnects are the sessions welcomed, StreamsLost those that
	// ended, StreamFailed attempts without a Welcome, over all hosts.
	StreamConnects uint64 `json:"streamConnects"`
	StreamsLost    uint64 `json:"streamsLost"`
	StreamFailed   uint64 `json:"streamFailed"`
}

// add sums o into s.
func (s *hostsSummary) add(o hostsSummary) {
	s.Hosts += o.Hosts
	s.Connected += o.Connected
	s.Programmed += o.Programmed
	s.Written += o.Written
	s.Writes += o.Writes
	if s.WriteSample == "" {
		s.WriteSample = o.WriteSample
	}
	s.StreamConnects += o.StreamConnects
	s.StreamsLost += o.StreamsLost
	s.StreamFailed += o.StreamFailed
}

// runHAAgents runs the simulated hosts of the spec until its parent ends
// it, answering "state" with every host's state.
func runHAAgents(ctx context.Context, c sim.ChildIO) (err error) {
	var spec haAgentsSpec
	if err := json.Unmarshal(c.Spec, &spec); err != nil {
		return fmt.Errorf("ha agents: spec: %w", err)
	}
	var (
		agents  []*agent.Agent
		drivers []*simdp.Driver
		marks   []datapath.Counts // "mark"'s
		clients []*client.Client  // of the reporters, closed after the agents
	)
	defer func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, a := range agents {
			sem <- struct{}{}
			wg.Go(func() { _ = a.Close(); <-sem })
		}
		wg.Wait()
		for _, d := range drivers {
			err = errors.Join(err, d.Close())
		}
		for _, c := range clients {
			c.Close()
		}
	}()
	var reporter func(first int) *failoverReporter
	if len(spec.APIs) > 0 {
		cs, f, err := newFailoverReporters(spec.APIs)
		if err != nil {
			return fmt.Errorf("ha agents: %w", err)
		}
		clients, reporter = cs, f
	}
	for i, h := range spec.Hosts {
		d := simdp.New(simdp.Config{})
		drivers = append(drivers, d)
		var rep agent.Reporter
		if reporter != nil {
			rep = reporter(i)
		}
		a, err := agent.New(agent.Config{Host: h.Name, StreamAddrs: spec.Replicas, UDPAddr: sim.ReplicaFor(h.Name, spec.Replicas),
			UDPFollowsStream: true, Key: h.Key, Driver: d, UnderlayIP: h.Underlay, Reporter: rep,
			// They share two cores with the replicas under faults.
			HandshakeTimeout: time.Minute, Logger: c.Logger})
		if err != nil {
			return fmt.Errorf("ha agents: %w", err)
		}
		if err := a.Start(ctx); err != nil {
			return fmt.Errorf("ha agents: start %s: %w", h.Name, err)
		}
		agents = append(agents, a)
	}
	c.Emit(haAgentsMsg{T: "ready"})
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			m := haAgentsMsg{T: "stats"}
			for _, a := range agents {
				if a.Connected() {
					m.Connected++
				}
				m.StreamsLost += a.Stats().StreamLost
			}
			c.Emit(m)
		case cmd, ok := <-c.Cmds:
			if !ok {
				return nil
			}
			switch cmd {
			case "mark":
				marks = make([]datapath.Counts, len(drivers))
				for i, d := range drivers {
					marks[i] = d.Counts()
				}
				c.Emit(haAgentsMsg{T: "marked"})
				continue
			case "summary":
				sum, err := summarise(ctx, spec.Hosts, agents, drivers, marks)
				if err != nil {
					return err
				}
				c.Emit(haAgentsMsg{T: "summary", Summary: &sum})
				continue
			case "state":
			default:
				continue
			}
			m := haAgentsMsg{T: "state", Hosts: make([]haHostState, len(agents))}
			for i, a := range agents {
				s := haHostState{Name: spec.Hosts[i].Name, Connected: a.Connected(), View: a.ViewVersion(), Applied: a.AppliedVersion()}
				snap, err := drivers[i].Snapshot(ctx)
				if err != nil {
					return fmt.Errorf("ha agents: %s: %w", s.Name, err)
				}
				for _, e := range snap.Endpoints {
					s.Endpoints = append(s.Endpoints, e.ID)
				}
				slices.Sort(s.Endpoints)
				m.Hosts[i] = s
			}
			c.Emit(m)
		}
	}
}

// summarisedAgent is what summarise reads of an agent.
type summarisedAgent interface {
	Stats() agent.Stats
	Connected() bool
	ViewVersion() uint64
	AppliedVersion() uint64
}

var _ summarisedAgent = (*agent.Agent)(nil)

// summarise sums up the hosts: marks, if set, are their drivers' counts
// to take the writes from.
func summarise[A summarisedAgent](ctx context.Context, hosts []haHostSpec, agents []A, drivers []*simdp.Driver, marks []datapath.Counts) (hostsSummary, error) {
	s := hostsSummary{Hosts: len(agents)}
	for i, a := range agents {
		st := a.Stats()
		s.StreamConnects += st.StreamConnects
		s.StreamsLost += st.StreamLost
		s.StreamFailed += st.StreamFailed
		if !a.Connected() {
			continue
		}
		s.Connected++
		snap, err := drivers[i].Snapshot(ctx)
		if err != nil {
			return s, fmt.Errorf("ha agents: %s: %w", hosts[i].Name, err)
		}
		if v := a.ViewVersion(); v != 0 && a.AppliedVersion() == v && len(snap.Endpoints) == hosts[i].Endpoints {
			s.Programmed++
		}
		var base datapath.Counts
		if marks != nil {
			base = marks[i]
		}
		if d := drivers[i].Counts().Sub(base); len(d) > 0 {
			s.Written++
			s.Writes += d.Total()
			if s.WriteSample == "" {
				s.WriteSample = hosts[i].Name + ": " + d.String()
			}
		}
	}
	return s, nil
}

// haHosts is the parent's end of the simulated hosts.
type haHosts struct {
	child   *sim.Child
	names   []string
	states  chan []haHostState
	replies chan haAgentsMsg // "marked" and "summary"
	done    chan struct{}    // the reader ended

	mu    sync.Mutex
	stats haAgentsMsg
}

// startHosts enrols Hosts hosts through the API (each gets its Host and
// key), starts their agents in a child process and waits until every one
// is connected.
func (r *haRun) startHosts(ctx context.Context) (*haHosts, error) {
	t0 := time.Now()
	api, err := client.New("http://"+r.members[0].spec.API, client.WithTimeout(30*time.Second))
	if err != nil {
		return nil, err
	}
	defer api.Close()
	spec := haAgentsSpec{Hosts: make([]haHostSpec, r.cfg.Hosts)}
	for _, m := range r.members {
		spec.Replicas = append(spec.Replicas, m.spec.Agent)
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make([]error, min(16, r.cfg.Hosts))
	)
	for w := range errs {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < r.cfg.Hosts && errs[w] == nil; i = int(next.Add(1) - 1) {
				name, ip := fmt.Sprintf("sh%d", i), sim.HostUnderlay(i)
				e, err := api.Enroll(ctx, client.EnrollRequest{Host: name, UnderlayIP: ip.String()})
				if err != nil {
					errs[w] = fmt.Errorf("bench: ha: %w", err)
					return
				}
				key, err := secrets.ParseKey(e.HostKey)
				if err != nil {
					errs[w] = fmt.Errorf("bench: ha: key of %s: %w", name, err)
					return
				}
				spec.Hosts[i] = haHostSpec{Name: name, Key: key, Underlay: ip}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r.logf("setup: %d hosts enrolled in %s", r.cfg.Hosts, time.Since(t0).Round(time.Millisecond))
	c, err := sim.StartChild(ctx, sim.ChildConfig{Name: "simulated hosts", Exe: r.cfg.Exec, Role: roleHAAgents, Spec: spec, Log: prefixLines(r.cfg.ChildLog, "hosts: ")})
	if err != nil {
		return nil, err
	}
	h := &haHosts{child: c, states: make(chan []haHostState, 1), replies: make(chan haAgentsMsg, 1), done: make(chan struct{})}
	for _, s := range spec.Hosts {
		h.names = append(h.names, s.Name)
	}
	if _, err := c.Await(ctx, "ready", 5*time.Minute); err != nil {
		return nil, errors.Join(fmt.Errorf("bench: ha: %w", err), c.Close())
	}
	go h.read()
	deadline := time.Now().Add(2*time.Minute + time.Duration(r.cfg.Hosts)*10*time.Millisecond)
	for h.connected() < r.cfg.Hosts {
		if time.Now().After(deadline) {
			return h, fmt.Errorf("bench: ha: %d of %d hosts connected after %s", h.connected(), r.cfg.Hosts, time.Since(t0).Round(time.Second))
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return h, err
		}
	}
	r.logf("setup: %d hosts connected %s after their enrolment began", r.cfg.Hosts, time.Since(t0).Round(time.Millisecond))
	return h, nil
}

// read follows the child's lines until it ends.
func (h *haHosts) read() {
	defer close(h.done)
	for cm := range h.child.Messages() {
		var m haAgentsMsg
		if cm.Decode(&m) != nil {
			continue
		}
		switch m.T {
		case "stats":
			h.mu.Lock()
			h.stats = m
			h.mu.Unlock()
		case "state":
			select {
			case h.states <- m.Hosts:
			default:
			}
		case "marked", "summary":
			select {
			case h.replies <- m:
			default:
			}
		}
	}
}

// connected returns how many hosts had a config stream up at the latest
// stats.
func (h *haHosts) connected() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats.Connected
}

// state asks the child for every host's state.
func (h *haHosts) state(ctx context.Context) ([]haHostState, error) {
	if err := h.child.Send("state"); err != nil {
		return nil, err
	}
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-h.done:
		return nil, fmt.Errorf("bench: ha: the simulated hosts ended: %w", h.child.Err())
	case <-t.C:
		return nil, errors.New("bench: ha: no state from the simulated hosts within a minute")
	case s := <-h.states:
		return s, nil
	}
}

// ask sends the child cmd ("mark" or "summary") and returns its reply.
func (h *haHosts) ask(ctx context.Context, cmd string) (haAgentsMsg, error) {
	if err := h.child.Send(cmd); err != nil {
		return haAgentsMsg{}, err
	}
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return haAgentsMsg{}, ctx.Err()
	case <-h.done:
		return haAgentsMsg{}, fmt.Errorf("bench: the simulated hosts ended: %w", h.child.Err())
	case <-t.C:
		return haAgentsMsg{}, fmt.Errorf("bench: no answer to %q from the simulated hosts within a minute", cmd)
	case m := <-h.replies:
		return m, nil
	}
}

func (h *haHosts) close() error { return h.child.Close() }

// converge waits (up to two minutes) until every host holds, applied, a
// view of exactly the endpoints the API lists on it, and reports into rep
// how many did, after how long since the churn stopped (at stopped), and
// the config streams they lost during the run.
func (r *haRun) converge(ctx context.Context, rep *HAReport, stopped time.Time) error {
	api, err := client.New("http://"+r.members[0].spec.API, client.WithTimeout(30*time.Second))
	if err != nil {
		return err
	}
	defer api.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		eps, _, err := api.List(ctx, apiv1.KindEndpoint, haTenantName, "")
		if err != nil {
			return fmt.Errorf("bench: ha: list endpoints: %w", err)
		}
		states, err := r.hosts.state(ctx)
		if err != nil {
			return err
		}
		rep.HostsConverged, rep.NotConverged = hostsConverged(states, eps)
		if rep.HostsConverged == len(states) || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	if rep.HostsConverged == r.cfg.Hosts {
		rep.ConvergedAfter = time.Since(stopped)
		r.logf("all %d hosts converged %.2fs after the churn stopped", r.cfg.Hosts, rep.ConvergedAfter.Seconds())
	}
	r.hosts.mu.Lock()
	rep.HostStreamsLost = r.hosts.stats.StreamsLost
	r.hosts.mu.Unlock()
	return nil
}

// hostsConverged counts the hosts that are connected and hold, applied, a
// view of exactly the endpoints of eps on them, and describes one that
// does not ("" if all do).
func hostsConverged(states []haHostState, eps []apiv1.Object) (int, string) {
	want := map[string][]string{}
	for _, o := range eps {
		ep := o.(*apiv1.Endpoint)
		want[ep.Spec.Host] = append(want[ep.Spec.Host], ep.Metadata.Tenant+"/"+ep.Metadata.Name)
	}
	n, sample := 0, ""
	for _, s := range states {
		w := want[s.Name]
		slices.Sort(w)
		switch {
		case s.Connected && s.View != 0 && s.Applied == s.View && slices.Equal(s.Endpoints, w):
			n++
		case sample == "":
			sample = fmt.Sprintf("%s: connected %v, view %d applied %d, endpoints %v, want %v", s.Name, s.Connected, s.View, s.Applied, s.Endpoints, w)
		}
	}
	return n, sample
}
