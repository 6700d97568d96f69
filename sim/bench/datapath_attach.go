package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/datapath/linux"
	"github.com/weftnet/weft/internal/testnet"
)

// AttachPart is the endpoint attach phase of one driver on one host.
type AttachPart struct {
	Datapath  string `json:"datapath"`
	Endpoints int    `json:"endpoints"`
	// Successive: one Set per endpoint on a fresh host, each Set with one
	// endpoint more; once with every Set reading every namespace
	// (EndpointResync, and linux's VPCResync, negative: the drivers'
	// behaviour before attaching was made fast) and once with the driver's
	// default configuration, as the agent runs it.
	Successive []SetSeries `json:"successive"`
	// Batch: one Set of all endpoints on a fresh host.
	BatchMs     float64         `json:"batchMs"`
	BatchPerSec float64         `json:"batchAttachPerSec"`
	BatchMeanMs float64         `json:"batchMeanMsPerEndpoint"`
	BatchWrites datapath.Counts `json:"batchWrites"`
	WritesPerEP float64         `json:"writesPerEndpoint"`
}

// SetSeries is a series of successive Sets, each attaching one endpoint.
type SetSeries struct {
	EndpointResync string  `json:"endpointResync,omitempty"`
	PerSec         float64 `json:"attachPerSec"`
	P50Ms          float64 `json:"p50Ms"`
	P99Ms          float64 `json:"p99Ms"`
	MaxMs          float64 `json:"maxMs"`
	FirstMs        float64 `json:"firstMs"`
	LastMs         float64 `json:"lastMs"`
}

func (r *dpRun) attach(ctx context.Context, dp string) (*AttachPart, error) {
	part := &AttachPart{Datapath: dp, Endpoints: r.cfg.Attach}
	vpc := benchVPC(200, 1)
	eps := make([]datapath.Endpoint, r.cfg.Attach)
	for i := range eps {
		eps[i] = benchEndpoint(fmt.Sprintf("bench/a%d", i), vpc.VNI, 1, i)
	}
	for _, resync := range []time.Duration{-1, 0} {
		s, err := r.attachSuccessive(ctx, dp, vpc, eps, resync)
		if err != nil {
			return part, err
		}
		part.Successive = append(part.Successive, *s)
		r.status.printf("attach %s: %d successive Sets%s: %.1f endpoints/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms (first %.2f, last %.2f)",
			dp, len(eps), resyncNote(resync), s.PerSec, s.P50Ms, s.P99Ms, s.MaxMs, s.FirstMs, s.LastMs)
	}

	// One Set of all on a fresh host.
	n, err := r.newNet(testnet.Options{Hosts: 1})
	if err != nil {
		return part, err
	}
	defer r.closeNet(n)
	h := n.Host(0)
	d, err := r.newDataplane(ctx, dp, n, h, linux.Config{})
	if err != nil {
		return part, err
	}
	defer r.closeDataplane(d)
	if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}}); err != nil {
		return part, err
	}
	r.status.set("attach: one Set of %d endpoints", len(eps))
	before := d.Counts()
	t0 := time.Now()
	if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}, Endpoints: eps}); err != nil {
		return part, fmt.Errorf("batch set: %w", err)
	}
	dt := time.Since(t0)
	part.BatchWrites = d.Counts().Sub(before)
	part.WritesPerEP = round3(float64(part.BatchWrites.Total()) / float64(len(eps)))
	part.BatchMs = msOf(dt)
	part.BatchPerSec = round3(float64(len(eps)) / dt.Seconds())
	part.BatchMeanMs = round3(part.BatchMs / float64(len(eps)))
	r.status.printf("attach %s: one Set of %d endpoints: %.0f ms, %.1f endpoints/s, %.1f writes each",
		dp, len(eps), part.BatchMs, part.BatchPerSec, part.WritesPerEP)
	return part, nil
}

// resyncNote says which EndpointResync a series ran with.
func resyncNote(resync time.Duration) string {
	return " (" + resyncMode(resync) + ")"
}

// attachSuccessive attaches eps on a fresh host one Set at a time, each
// Set with one endpoint more than the one before; the driver with its
// EndpointResync (and linux's VPCResync) at resync (negative: every Set
// reads every namespace; 0: the defaults).
func (r *dpRun) attachSuccessive(ctx context.Context, dp string, vpc datapath.VPC, eps []datapath.Endpoint, resync time.Duration) (*SetSeries, error) {
	n, err := r.newNet(testnet.Options{Hosts: 1})
	if err != nil {
		return nil, err
	}
	defer r.closeNet(n)
	h := n.Host(0)
	d, err := r.newDataplane(ctx, dp, n, h, linux.Config{EndpointResync: resync, VPCResync: resync})
	if err != nil {
		return nil, err
	}
	defer r.closeDataplane(d)
	if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}}); err != nil {
		return nil, err
	}
	took := make([]time.Duration, 0, len(eps))
	var total time.Duration
	for i := range eps {
		r.status.set("attach %s: successive Set %d/%d%s", dp, i+1, len(eps), resyncNote(resync))
		t0 := time.Now()
		if err := d.Set(ctx, &datapath.Desired{Host: hostOf(h), VPCs: []datapath.VPC{vpc}, Endpoints: eps[:i+1]}); err != nil {
			return nil, fmt.Errorf("successive set %d: %w", i+1, err)
		}
		dt := time.Since(t0)
		took = append(took, dt)
		total += dt
	}
	s := &SetSeries{PerSec: round3(float64(len(eps)) / total.Seconds()),
		P50Ms: percentileMs(took, 50), P99Ms: percentileMs(took, 99), MaxMs: percentileMs(took, 100),
		FirstMs: msOf(took[0]), LastMs: msOf(took[len(took)-1])}
	s.EndpointResync = resyncMode(resync)
	return s, nil
}

// resyncMode names the resync setting of a series.
func resyncMode(resync time.Duration) string {
	if resync < 0 {
		return "every Set reads every namespace"
	}
	return "driver defaults"
}
