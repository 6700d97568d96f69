package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/lifecycle"
	"github.com/weftnet/weft/internal/testnet"
)

// FirstPacket is the first-packet latency phase of one driver.
type FirstPacket struct {
	Datapath string `json:"datapath"`
	Peers    int    `json:"peers"`
	// BothMiss: the peer's host has not learned the sender either, so the
	// request and the reply are both held for a miss.
	P50Ms  float64 `json:"p50Ms"`
	P99Ms  float64 `json:"p99Ms"`
	MaxMs  float64 `json:"maxMs"`
	Lost   int     `json:"lost"`
	Misses int     `json:"missesAnswered"`
	// MissToLearn is the simulated controller's time from receiving a miss
	// to Learn returning.
	MissToLearnP50Ms float64 `json:"missToLearnP50Ms"`
	MissToLearnP99Ms float64 `json:"missToLearnP99Ms"`
	// WarmP50Ms is the round trip to a peer already learned, for reference.
	WarmP50Ms float64 `json:"warmP50Ms"`
}

// missAnswerer plays the controller: it answers a driver's misses with
// Learn from a table, at once.
type missAnswerer struct {
	mu      sync.Mutex
	table   map[datapath.RemoteKey]datapath.Remote
	took    []time.Duration
	unknown int
	errs    []error
	life    lifecycle.Group
}

// serve answers d's misses until Close.
func (a *missAnswerer) serve(d datapath.Driver) {
	a.life.Go(func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-d.Misses():
				if !ok {
					return
				}
				t0 := time.Now()
				a.mu.Lock()
				rm, found := a.table[datapath.RemoteKey(m)]
				a.mu.Unlock()
				if !found {
					a.mu.Lock()
					a.unknown++
					a.mu.Unlock()
					continue
				}
				err := d.Learn(ctx, []datapath.Remote{rm})
				dt := time.Since(t0)
				a.mu.Lock()
				a.took = append(a.took, dt)
				if err != nil && ctx.Err() == nil {
					a.errs = append(a.errs, err)
				}
				a.mu.Unlock()
			}
		}
	})
}

// Close stops answering and waits for the answerers.
func (a *missAnswerer) Close() error { return a.life.Close() }

func (r *dpRun) firstPacket(ctx context.Context, dp string) (*FirstPacket, error) {
	part := &FirstPacket{Datapath: dp, Peers: r.cfg.Peers}
	n, err := r.newNet(testnet.Options{Hosts: 2})
	if err != nil {
		return nil, err
	}
	defer r.closeNet(n)
	vpc := benchVPC(300, 2)
	src := benchEndpoint("bench/src", vpc.VNI, 2, 0)
	peers := make([]datapath.Endpoint, r.cfg.Peers)
	for i := range peers {
		peers[i] = benchEndpoint(fmt.Sprintf("bench/p%d", i), vpc.VNI, 2, 1+i)
	}
	ans := &missAnswerer{table: map[datapath.RemoteKey]datapath.Remote{}}
	ans.table[datapath.RemoteKey{VNI: vpc.VNI, IP: src.IP}] = datapath.Remote{VNI: vpc.VNI, IP: src.IP, MAC: src.MAC, HostUnderlay: n.Host(0).UnderlayIP, Epoch: 1}
	for _, p := range peers {
		ans.table[datapath.RemoteKey{VNI: vpc.VNI, IP: p.IP}] = datapath.Remote{VNI: vpc.VNI, IP: p.IP, MAC: p.MAC, HostUnderlay: n.Host(1).UnderlayIP, Epoch: 1}
	}
	var ds []dataplane
	defer func() {
		ans.Close()
		for _, d := range ds {
			r.closeDataplane(d)
		}
	}()
	for i, h := range n.Hosts() {
		d, err := r.newDataplane(ctx, dp, n, h, linux.Config{})
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
		want := &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}, Endpoints: []datapath.Endpoint{src}}
		if i == 1 {
			want.Endpoints = peers
		}
		r.status.set("firstpacket %s: attaching %d endpoints on %s", dp, len(want.Endpoints), h.Name)
		if err := d.Set(ctx, want); err != nil {
			return nil, err
		}
		ans.serve(d)
	}
	st, _ := ds[0].Status(src.ID)
	var first, warm []time.Duration
	srcKey := []datapath.RemoteKey{{VNI: vpc.VNI, IP: src.IP}}
	for i, p := range peers {
		r.status.set("firstpacket %s: peer %d/%d", dp, i+1, len(peers))
		// The peer's host forgets the sender, so the reply misses too.
		if err := ds[1].Forget(ctx, srcKey); err != nil {
			return nil, err
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		rtt, err := testnet.Ping(pctx, st.Netns, p.IP)
		pcancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			part.Lost++
			continue
		}
		first = append(first, rtt)
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		if rtt, err := testnet.Ping(wctx, st.Netns, p.IP); err == nil {
			warm = append(warm, rtt)
		}
		wcancel()
	}
	ans.mu.Lock()
	part.Misses = len(ans.took)
	part.MissToLearnP50Ms, part.MissToLearnP99Ms = percentileMs(ans.took, 50), percentileMs(ans.took, 99)
	lerr := errors.Join(ans.errs...)
	ans.mu.Unlock()
	part.P50Ms, part.P99Ms, part.MaxMs = percentileMs(first, 50), percentileMs(first, 99), percentileMs(first, 100)
	part.WarmP50Ms = percentileMs(warm, 50)
	r.status.printf("firstpacket %s: %d never-seen peers: p50 %.3f ms, p99 %.3f ms, max %.3f ms, %d lost (warm p50 %.3f ms; %d misses answered)",
		dp, len(peers), part.P50Ms, part.P99Ms, part.MaxMs, part.Lost, part.WarmP50Ms, part.Misses)
	if lerr != nil {
		return part, fmt.Errorf("learn: %w", lerr)
	}
	return part, nil
}
