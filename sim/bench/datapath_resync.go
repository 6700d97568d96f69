package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/testnet"
)

// ResyncPart is the restart phase of one driver: a fresh driver adopts a
// host's state.
type ResyncPart struct {
	Datapath  string `json:"datapath"`
	Endpoints int    `json:"endpoints"`
	VPCs      int    `json:"vpcs"`
	// BuildMs is the first driver's one Set of everything.
	BuildMs float64 `json:"buildMs"`
	// NewMs (linux.New, adopting the namespaces) + SetMs (the same desired
	// state) = ResyncMs.
	NewMs    float64         `json:"newMs"`
	SetMs    float64         `json:"setMs"`
	ResyncMs float64         `json:"resyncMs"`
	Writes   datapath.Counts `json:"writes"`
	// Ping across the restart (remote endpoint -> a local one).
	PingSent     int     `json:"pingSent"`
	PingLost     int     `json:"pingLost"`
	PingMaxRTTMs float64 `json:"pingMaxRttMs"`
}

func (r *dpRun) resync(ctx context.Context, dp string) (*ResyncPart, error) {
	part := &ResyncPart{Datapath: dp, Endpoints: r.cfg.Resync, VPCs: r.cfg.ResyncVPCs}
	n, err := r.newNet(testnet.Options{Hosts: 2})
	if err != nil {
		return nil, err
	}
	defer r.closeNet(n)
	h0, h1 := n.Host(0), n.Host(1)
	want := &datapath.Desired{Host: hostOf(h0)}
	for v := range r.cfg.ResyncVPCs {
		want.VPCs = append(want.VPCs, benchVPC(uint32(1000+v), byte(10+v%240)))
	}
	for i := range r.cfg.Resync {
		v := i % r.cfg.ResyncVPCs
		want.Endpoints = append(want.Endpoints, benchEndpoint(fmt.Sprintf("bench/r%d", i), uint32(1000+v), byte(10+v%240), i/r.cfg.ResyncVPCs))
	}
	// The ping target is endpoint 0 (VPC 1000); its peer lives on h1.
	target := want.Endpoints[0]
	peer := benchEndpoint("bench/peer", target.VNI, byte(10), r.cfg.Resync) // above every local index
	d0, err := r.newDataplane(ctx, dp, n, h0, linux.Config{})
	if err != nil {
		return nil, err
	}
	d1, err := r.newDataplane(ctx, dp, n, h1, linux.Config{})
	if err != nil {
		r.closeDataplane(d0)
		return nil, err
	}
	var drivers = []dataplane{d0, d1}
	defer func() {
		for _, d := range drivers {
			r.closeDataplane(d)
		}
	}()
	r.status.set("resync %s: attaching %d endpoints in %d VPCs", dp, r.cfg.Resync, r.cfg.ResyncVPCs)
	t0 := time.Now()
	if err := d0.Set(ctx, want); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	part.BuildMs = msOf(time.Since(t0))
	r.status.printf("resync %s: %d endpoints in %d VPCs attached in one Set in %.0f ms", dp, r.cfg.Resync, r.cfg.ResyncVPCs, part.BuildMs)
	if err := d1.Set(ctx, &datapath.Desired{Host: hostOf(h1), VPCs: want.VPCs[:1], Endpoints: []datapath.Endpoint{peer}}); err != nil {
		return nil, err
	}
	if err := d0.Learn(ctx, []datapath.Remote{{VNI: peer.VNI, IP: peer.IP, MAC: peer.MAC, HostUnderlay: h1.UnderlayIP, Epoch: 1}}); err != nil {
		return nil, err
	}
	if err := d1.Learn(ctx, []datapath.Remote{{VNI: target.VNI, IP: target.IP, MAC: target.MAC, HostUnderlay: h0.UnderlayIP, Epoch: 1}}); err != nil {
		return nil, err
	}
	pst, _ := d1.Status(peer.ID)
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = testnet.Ping(pctx, pst.Netns, target.IP)
	pcancel()
	if err != nil {
		return nil, fmt.Errorf("path check: %w", err)
	}
	pinger, err := testnet.StartPinger(pst.Netns, target.IP, r.cfg.PingInterval)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _ = pinger.Stop(0)
		}
	}()
	time.Sleep(100 * time.Millisecond)

	// The restart: the old driver goes (its data plane stays), a new one
	// adopts and converges.
	r.status.set("resync %s: restarting the driver of %s", dp, h0.Name)
	d0.Close()
	t0 = time.Now()
	nd, err := r.newDataplane(ctx, dp, n, h0, linux.Config{})
	if err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	drivers[0] = nd
	tNew := time.Since(t0)
	t1 := time.Now()
	before := nd.Counts()
	if err := nd.Set(ctx, want); err != nil {
		return nil, fmt.Errorf("resync set: %w", err)
	}
	tSet := time.Since(t1)
	part.Writes = nd.Counts().Sub(before)
	part.NewMs, part.SetMs, part.ResyncMs = msOf(tNew), msOf(tSet), msOf(tNew+tSet)
	time.Sleep(200 * time.Millisecond)
	stopped = true
	ps, perr := pinger.Stop(200 * time.Millisecond)
	part.PingSent, part.PingLost, part.PingMaxRTTMs = ps.Sent, len(ps.Lost), msOf(ps.MaxRTT)
	r.status.printf("resync %s: %d endpoints: New %.0f ms + Set %.0f ms = %.0f ms, %d writes; ping across it: %d sent, %d lost",
		dp, r.cfg.Resync, part.NewMs, part.SetMs, part.ResyncMs, part.Writes.Total(), part.PingSent, part.PingLost)
	return part, perr
}
