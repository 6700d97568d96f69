package wire

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// snapshotDelta returns a snapshot shaped like a cold-start view (package
// view's JSON): the host, a VPC with its subnets, ten endpoints and a
// policy, about 5 KB on the wire.
func snapshotDelta(tb testing.TB) *Delta {
	tb.Helper()
	d := &Delta{FromVersion: 0, ToVersion: 1<<44 | 123456, Snapshot: true, ViewHash: make([]byte, ViewHashSize)}
	add := func(typ, id string, v any) {
		data, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		d.Upserts = append(d.Upserts, Resource{Key: ResourceKey{Type: typ, ID: id}, Data: data})
	}
	add("host", "node-0017", map[string]any{"name": "node-0017", "hostID": 17, "underlayIP": "192.0.2.17", "capacityBps": 25_000_000_000})
	var subnets []map[string]string
	for i := range 4 {
		subnets = append(subnets, map[string]string{"name": fmt.Sprintf("subnet-%d", i), "cidr": fmt.Sprintf("10.0.%d.0/24", i), "gateway": fmt.Sprintf("10.0.%d.1", i)})
	}
	add("vpc", "acme/prod", map[string]any{"tenant": "acme", "name": "prod", "vni": 4097, "cidrs": []string{"10.0.0.0/16"}, "subnets": subnets})
	var applies []string
	for i := range 10 {
		name := fmt.Sprintf("web-%04d", i)
		add("endpoint", "acme/"+name, map[string]any{"tenant": "acme", "name": name, "uid": fmt.Sprintf("8c0f5a3e-1d2b-4c5d-9e8f-%012d", i),
			"vpc": "prod", "vni": 4097, "subnet": "subnet-1", "cidr": "10.0.1.0/24", "gateway": "10.0.1.1",
			"ip": fmt.Sprintf("10.0.1.%d", 10+i), "mac": fmt.Sprintf("02:00:0a:00:01:%02x", 10+i),
			"labels": map[string]string{"app": "web", "tier": "frontend", "env": "prod"}, "identity": 1000 + i})
		applies = append(applies, "acme/"+name)
	}
	add("policy", "acme/web-ingress", map[string]any{"tenant": "acme", "name": "web-ingress",
		"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]string{"app": "web"}},
			"ingress": []any{map[string]any{"from": []any{map[string]any{"cidr": "0.0.0.0/0"}}, "ports": []any{map[string]any{"protocol": "TCP", "port": 443}}}}},
		"applies": applies})
	return d
}

// BenchmarkConnRoundTrip: one delta from the controller's Conn to the
// agent's and its Ack back, as in a cold start (a 5 KB snapshot), with the
// per-call contexts the callers use (a cancellable session context for
// reads, a timeout per write).
func BenchmarkConnRoundTrip(b *testing.B) {
	d := snapshotDelta(b)
	frame, err := AppendMessage(nil, d, 0)
	if err != nil {
		b.Fatal(err)
	}
	for _, transport := range []string{"pipe", "tcp"} {
		b.Run(transport, func(b *testing.B) {
			var cn, sn net.Conn
			if transport == "pipe" {
				cn, sn = net.Pipe()
				b.Cleanup(func() { cn.Close(); sn.Close() })
			} else {
				cn, sn = loopbackPair(b)
			}
			agent, ctrl := NewConn(cn, 0), NewConn(sn, 0)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ack := &Ack{Version: d.ToVersion}
			errc := make(chan error, 1)
			go func() { // the agent: read a delta, answer an Ack
				for {
					m, err := agent.ReadMessage(ctx)
					if err != nil {
						errc <- err
						return
					}
					wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
					err = agent.WriteMessage(wctx, ack)
					wcancel()
					if err != nil {
						errc <- err
						return
					}
					_ = m
				}
			}()
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
				err := ctrl.WriteMessage(wctx, d)
				wcancel()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ctrl.ReadMessage(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cancel()
			agent.Close()
			ctrl.Close()
			<-errc
		})
	}
}

// BenchmarkReadDelta: the agent's side alone, reading and decoding a 5 KB
// snapshot frame from a connection (a pipe fed by another goroutine).
func BenchmarkReadDelta(b *testing.B) {
	d := snapshotDelta(b)
	frame, err := AppendMessage(nil, d, 0)
	if err != nil {
		b.Fatal(err)
	}
	cn, sn := net.Pipe()
	defer cn.Close()
	defer sn.Close()
	go func() {
		for {
			if _, err := sn.Write(frame); err != nil {
				return
			}
		}
	}()
	c := NewConn(cn, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.ReadMessage(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeSnapshot: DecodeMessage alone on a 5 KB snapshot body.
func BenchmarkDecodeSnapshot(b *testing.B) {
	frame, err := AppendMessage(nil, snapshotDelta(b), 0)
	if err != nil {
		b.Fatal(err)
	}
	body := frame[FrameHeaderLen:]
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeMessage(FrameDelta, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnIdleMemory reports the live heap an idle Conn holds, per
// Conn, above that of its bare TCP connection, with a reader blocked in
// ReadMessage (the normal state of a session): on the agent's end after it
// read a 5 KB snapshot and wrote an Ack, on the controller's end after it
// wrote the snapshot and read the Ack. The peer end is a bare net.Conn.
func BenchmarkConnIdleMemory(b *testing.B) {
	const n = 2000
	for _, side := range []string{"agent", "controller"} {
		b.Run("side="+side, func(b *testing.B) {
			var perConn float64
			for b.Loop() {
				perConn = idleConnBytes(b, n, side == "agent")
			}
			b.ReportMetric(perConn, "bytes/conn")
		})
	}
}

func idleConnBytes(tb testing.TB, n int, agentSide bool) float64 {
	d := snapshotDelta(tb)
	snap, err := AppendMessage(nil, d, 0)
	if err != nil {
		tb.Fatal(err)
	}
	ack, err := AppendMessage(nil, &Ack{Version: d.ToVersion}, 0)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	raw := make([][2]net.Conn, n) // wrapped end, bare peer
	for i := range raw {
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			accepted <- c
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		s := <-accepted
		if s == nil {
			tb.Fatal("accept failed")
		}
		raw[i] = [2]net.Conn{c, s}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		for _, p := range raw {
			p[0].Close()
			p[1].Close()
		}
		wg.Wait()
	}()
	before := liveHeap()

	conns := make([]*Conn, n)
	for i, p := range raw {
		c := NewConn(p[0], 0)
		conns[i] = c
		if agentSide {
			if _, err := p[1].Write(snap); err != nil {
				tb.Fatal(err)
			}
			if _, err := c.ReadMessage(ctx); err != nil {
				tb.Fatal(err)
			}
			if err := c.WriteMessage(ctx, &Ack{Version: d.ToVersion}); err != nil {
				tb.Fatal(err)
			}
		} else {
			if err := c.WriteMessage(ctx, d); err != nil {
				tb.Fatal(err)
			}
			if _, err := p[1].Write(ack); err != nil {
				tb.Fatal(err)
			}
			if _, err := c.ReadMessage(ctx); err != nil {
				tb.Fatal(err)
			}
		}
		wg.Go(func() { c.ReadMessage(ctx) })
	}
	time.Sleep(200 * time.Millisecond) // let the readers block
	after := liveHeap()
	runtime.KeepAlive(conns)
	return float64(int64(after)-int64(before)) / float64(n)
}

func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
