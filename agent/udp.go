package agent

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/weftnet/weft/wire"
)

// udpLoop reads the datagrams the controller sends to the agent: lookup
// replies, invalidations and heartbeat acks. Each is authenticated with the
// host key and checked against the replay window before it is decoded;
// anything else is counted and dropped.
func (a *Agent) udpLoop(ctx context.Context) {
	buf := make([]byte, wire.MaxDatagramSize+1)
	var (
		reply wire.LookupReply
		inv   wire.Invalidate
		ack   wire.HeartbeatAck
	)
	for {
		n, _, err := a.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			a.log.Warn("read UDP", "err", err)
			if !sleep(ctx, 10*time.Millisecond) {
				return
			}
			continue
		}
		hdr, body, err := a.verifier.Open(buf[:n])
		if err != nil {
			a.counters.rejected.Add(1)
			a.log.Debug("datagram rejected", "err", err)
			continue
		}
		switch hdr.Type {
		case wire.TypeLookupReply:
			if err := reply.UnmarshalBinary(body); err != nil {
				a.counters.rejected.Add(1)
				continue
			}
			a.answer(ctx, &reply)
		case wire.TypeInvalidate:
			if err := inv.UnmarshalBinary(body); err != nil {
				a.counters.rejected.Add(1)
				continue
			}
			a.invalidate(ctx, &inv)
		case wire.TypeHeartbeatAck:
			if err := ack.UnmarshalBinary(body); err != nil {
				a.counters.rejected.Add(1)
				continue
			}
			a.counters.heartbeatAcks.Add(1)
		}
	}
}

// heartbeatLoop sends a heartbeat every HeartbeatInterval, starting at once.
// A send never waits: a full socket buffer drops the heartbeat.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	var (
		buf = make([]byte, 0, wire.MaxDatagramSize)
		hb  wire.Heartbeat
	)
	for {
		buf = a.sendHeartbeat(buf, &hb)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) sendHeartbeat(buf []byte, hb *wire.Heartbeat) []byte {
	id := a.hostID.Load()
	if id == 0 {
		return buf // the controller has not numbered this host yet
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
	pkt, err := wire.Seal(buf[:0], wire.Header{HostID: id, Seq: a.seq.Next()}, hb, &a.key)
	if err != nil {
		a.log.Error("seal heartbeat", "err", err)
		return buf
	}
	if _, err := a.udp.WriteToUDPAddrPort(pkt, a.udpTarget()); err != nil {
		a.log.Debug("send heartbeat", "err", err)
		return pkt
	}
	a.counters.heartbeats.Add(1)
	return pkt
}
