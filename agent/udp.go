package agent

import (
	"time"

	"github.com/weftnet/weft/wire"
)

// datagramScratch holds the decoded bodies of datagrams, reused by the
// goroutine that reads them.
type datagramScratch struct {
	reply wire.LookupReply
	inv   wire.Invalidate
	ack   wire.HeartbeatAck
}

// handleDatagram takes an authentic datagram for this host, read by the
// mux (authenticated with the host key and checked against the replay
// window): a lookup reply, an invalidation or a heartbeat ack. A body that
// does not decode is counted and dropped.
func (a *Agent) handleDatagram(hdr wire.Header, body []byte, sc *datagramScratch) {
	ctx := a.runCtx
	switch hdr.Type {
	case wire.TypeLookupReply:
		if err := sc.reply.UnmarshalBinary(body); err != nil {
			a.counters.rejected.Add(1)
			return
		}
		a.answer(ctx, &sc.reply)
	case wire.TypeInvalidate:
		if err := sc.inv.UnmarshalBinary(body); err != nil {
			a.counters.rejected.Add(1)
			return
		}
		a.invalidate(ctx, &sc.inv)
	case wire.TypeHeartbeatAck:
		if err := sc.ack.UnmarshalBinary(body); err != nil {
			a.counters.rejected.Add(1)
			return
		}
		a.counters.heartbeatAcks.Add(1)
	}
}

// rejectDatagram counts a datagram for this host that failed
// authentication or the replay check.
func (a *Agent) rejectDatagram(err error) {
	a.counters.rejected.Add(1)
	a.log.Debug("datagram rejected", "err", err)
}

// appendHeartbeat appends the host's heartbeat, sealed, to buf, built in
// hb (the caller's long-lived scratch: a body passed to wire.Seal escapes).
// It reports false (and appends nothing) before the controller numbered
// the host. The mux sends it, every HeartbeatInterval, to udpTarget.
func (a *Agent) appendHeartbeat(buf []byte, hb *wire.Heartbeat) ([]byte, bool) {
	id := a.hostID.Load()
	if id == 0 {
		return buf, false
	}
	a.mu.Lock()
	*hb = wire.Heartbeat{ViewVersion: a.applied, UptimeSeconds: uint32(time.Since(a.startTime) / time.Second)}
	if a.desired != nil {
		hb.EndpointCount = uint32(len(a.desired.Endpoints))
	}
	switch {
	case a.setErr != nil:
		hb.Health |= wire.HealthDegraded
	case a.desired != nil && a.applied == a.view.Version:
		hb.Health |= wire.HealthReady
	}
	a.mu.Unlock()
	if !a.connected.Load() {
		hb.Health |= wire.HealthHeadless
	}
	pkt, err := wire.Seal(buf, wire.Header{HostID: id, Seq: a.seq.Next()}, hb, &a.key)
	if err != nil {
		a.log.Error("seal heartbeat", "err", err)
		return buf, false
	}
	return pkt, true
}
