package agent

import (
	"context"
	"io"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/observe/capture"
	"github.com/weftnet/weft/view"
)

// Captures: each capture the host takes part in streams its packets to
// the controller in one upload (package capture's stream), from its start
// in the view to its end there: interface declarations, packets, a Mark
// every 200 ms (nothing earlier follows) and an End. The observer loop
// encodes; a goroutine per capture sends; packets that do not fit its
// queue are counted as lost, never waited for.

// uploadQueue bounds the records waiting to be sent per capture.
const uploadQueue = 4096

// markLag is how far behind now a Mark claims nothing earlier follows:
// the time a captured packet may take from the kernel to the loop.
const markLag = 200 * time.Millisecond

type upload struct {
	tenant, name, uid string
	recs              chan capture.Record
	ifaces            map[string]uint16 // interface name → id, in this upload
	lost              uint64            // packets not queued here
	driverLost        uint64            // the driver's count
	cancel            context.CancelFunc
}

// syncUploads starts an upload for each new capture and ends those of
// captures that left the view.
func (a *Agent) syncUploads(ctx context.Context, caps map[string]*view.Capture) {
	o := a.tracer
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, u := range o.uploads {
		if c := caps[id]; c == nil || c.UID != u.uid {
			a.endUpload(id, u)
		}
	}
	for id, c := range caps {
		if o.uploads[id] != nil {
			continue
		}
		uctx, cancel := context.WithCancel(ctx)
		u := &upload{tenant: c.Tenant, name: c.Name, uid: c.UID, recs: make(chan capture.Record, uploadQueue),
			ifaces: map[string]uint16{}, cancel: cancel}
		o.uploads[id] = u
		if !a.life.Go(func(context.Context) { a.send(uctx, u) }) {
			cancel()
		}
	}
}

// endUpload sends a capture's End and lets its sender finish. The caller
// holds o.mu.
func (a *Agent) endUpload(id string, u *upload) {
	delete(a.tracer.uploads, id)
	select {
	case u.recs <- capture.Record{Type: capture.RecEnd, Lost: u.lost + u.driverLost}:
	default:
	}
	close(u.recs)
}

// endUploads ends every upload (the loop stops).
func (a *Agent) endUploads() {
	o := a.tracer
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, u := range o.uploads {
		a.endUpload(id, u)
		u.cancel()
	}
}

// send streams one capture's records until its queue is closed, its
// context ends or the controller stops taking them.
func (a *Agent) send(ctx context.Context, u *upload) {
	defer u.cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { // owned: send waits for it below
		done <- a.tracer.sink.UploadCapture(ctx, u.tenant, u.name, u.uid, a.cfg.Host, pr)
		_ = pr.Close()
	}()
	w := capture.NewWriter(pw)
	var err error
	for rec := range u.recs {
		if err == nil {
			err = w.Write(&rec)
		}
		if err == nil && len(u.recs) == 0 {
			err = w.Flush()
		}
		if err != nil {
			u.cancel() // the controller stopped taking them; drain until the view drops the capture
		}
	}
	if err == nil {
		err = w.Flush()
	}
	_ = pw.CloseWithError(err)
	if uerr := <-done; uerr != nil && ctx.Err() == nil {
		a.log.Warn("capture upload ended", "capture", view.ID(u.tenant, u.name), "err", uerr)
	}
}

// capturePacket queues a captured packet on its capture's upload.
func (a *Agent) capturePacket(p datapath.CapturedPacket) {
	o := a.tracer
	o.mu.Lock()
	defer o.mu.Unlock()
	u := o.uploads[p.Capture]
	if u == nil {
		return
	}
	u.driverLost = p.Lost
	id, ok := u.ifaces[p.Interface]
	if !ok {
		id = uint16(len(u.ifaces) + 1)
		rec := capture.Record{Type: capture.RecInterface, Iface: id, Name: p.Interface, Endpoint: p.Endpoint, Underlay: p.Endpoint == ""}
		select {
		case u.recs <- rec:
			u.ifaces[p.Interface] = id
		default:
			u.lost++
			return
		}
	}
	select {
	case u.recs <- capture.Record{Type: capture.RecPacket, Iface: id, Out: p.Out, Drop: uint8(p.Drop), Time: p.Time, Length: uint32(p.Length), Data: p.Data}:
	default:
		u.lost++
	}
}

// markUploads tells the collector that nothing earlier than now-markLag
// follows.
func (a *Agent) markUploads(now time.Time) {
	o := a.tracer
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, u := range o.uploads {
		select {
		case u.recs <- capture.Record{Type: capture.RecMark, Time: now.Add(-markLag), Lost: u.lost + u.driverLost}:
		default:
		}
	}
}
