package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
)

// BenchmarkSealHeartbeat: the agent's per-second cost, encode + tag into a
// reused buffer.
func BenchmarkSealHeartbeat(b *testing.B) {
	key := mustKey(b, 1)
	hb := &Heartbeat{ViewVersion: 1 << 40, Health: HealthReady, EndpointCount: 300, UptimeSeconds: 86400}
	buf := make([]byte, 0, MaxDatagramSize)
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		var err error
		if buf, err = Seal(buf[:0], Header{HostID: 1, Seq: seq}, hb, key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenHeartbeat: the controller's per-datagram cost, verify (tag,
// replay window, per-host state) + decode, with the datagrams of one host
// or spread over many (more cache misses in the host table). Sealing the
// datagrams is not timed.
func BenchmarkOpenHeartbeat(b *testing.B) {
	for _, hosts := range []int{1, 100_000} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			key := make([]byte, KeySize)
			k, _ := NewKey(key)
			v := mustVerifier(b, KeyringFunc(func(uint32) ([]byte, bool) { return key, true }), ToController)
			const chunk = 4096
			pkts := make([][]byte, chunk)
			for i := range pkts {
				pkts[i] = make([]byte, 0, 64)
			}
			hb := &Heartbeat{ViewVersion: 7}
			var out Heartbeat
			next := 0 // datagrams sealed so far
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += chunk {
				b.StopTimer()
				n := min(chunk, b.N-i)
				for j := range n {
					host := uint32(next % hosts)
					seq := uint64(next/hosts + 1)
					pkts[j], _ = Seal(pkts[j][:0], Header{HostID: host, Seq: seq}, hb, &k)
					next++
				}
				b.StartTimer()
				for j := range n {
					_, body, err := v.Open(pkts[j])
					if err != nil {
						b.Fatal(err)
					}
					if err := out.UnmarshalBinary(body); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkOpenForged: the cost of rejecting a datagram with a bad tag.
func BenchmarkOpenForged(b *testing.B) {
	v := mustVerifier(b, newTestKeyring(1), ToController)
	pkt, err := Seal(nil, Header{HostID: 1, Seq: 1}, &Heartbeat{}, mustKey(b, 1))
	if err != nil {
		b.Fatal(err)
	}
	pkt[len(pkt)-1] ^= 1
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := v.Open(pkt); err != ErrAuth {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookupRoundTrip: one on-demand lookup end to end, without the
// network: the agent seals a request, the controller opens and decodes it,
// seals the answer, and the agent opens and decodes the reply.
func BenchmarkLookupRoundTrip(b *testing.B) {
	for _, batch := range []int{1, MaxLookupBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			kr := newTestKeyring(1)
			ctrl := mustVerifier(b, kr, ToController)
			agent := mustVerifier(b, kr, ToAgent)
			agentKey := mustKey(b, 1)
			agentSeq, ctrlSeq := &Sequence{}, &Sequence{}
			req := &LookupRequest{}
			for i := range batch {
				req.Queries = append(req.Queries, LookupQuery{RequestID: uint32(i), VNI: 100, IP: netip.AddrFrom4([4]byte{10, 0, 1, byte(i)})})
			}
			var gotReq LookupRequest
			reply := &LookupReply{}
			var gotReply LookupReply
			reqBuf := make([]byte, 0, MaxDatagramSize)
			replyBuf := make([]byte, 0, MaxDatagramSize)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				reqBuf, err = Seal(reqBuf[:0], Header{HostID: 1, Seq: agentSeq.Next()}, req, agentKey)
				if err != nil {
					b.Fatal(err)
				}
				hdr, body, err := ctrl.Open(reqBuf)
				if err != nil {
					b.Fatal(err)
				}
				if err := gotReq.UnmarshalBinary(body); err != nil {
					b.Fatal(err)
				}
				reply.Answers = reply.Answers[:0]
				for _, q := range gotReq.Queries {
					reply.Answers = append(reply.Answers, LookupAnswer{RequestID: q.RequestID, VNI: q.VNI, IP: q.IP, Found: true,
						Location: Location{HostIP: netip.AddrFrom4([4]byte{192, 0, 2, 11}), MAC: MACAddr{2}, Identity: 7}, Epoch: 1, TTL: 60})
				}
				key, err := ctrl.PreparedKey(hdr.HostID)
				if err != nil {
					b.Fatal(err)
				}
				replyBuf, err = Seal(replyBuf[:0], Header{HostID: hdr.HostID, Seq: ctrlSeq.Next()}, reply, &key)
				if err != nil {
					b.Fatal(err)
				}
				_, body, err = agent.Open(replyBuf)
				if err != nil {
					b.Fatal(err)
				}
				if err := gotReply.UnmarshalBinary(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHMAC compares the tag computation with crypto/hmac, reused
// (hmac.New once, Reset per message) and created per message.
func BenchmarkHMAC(b *testing.B) {
	msg := make([]byte, HeaderLen+HeartbeatLen)
	raw := rawKey(1)
	b.Run("prepared-key", func(b *testing.B) {
		k, _ := NewKey(raw)
		var out [32]byte
		b.ReportAllocs()
		for b.Loop() {
			k.sum(&out, msg)
		}
	})
	b.Run("hmac-reset", func(b *testing.B) {
		m := hmac.New(sha256.New, raw)
		var out [32]byte
		b.ReportAllocs()
		for b.Loop() {
			m.Reset()
			m.Write(msg)
			m.Sum(out[:0])
		}
	})
	b.Run("hmac-new", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := hmac.New(sha256.New, raw)
			m.Write(msg)
			m.Sum(nil)
		}
	})
}

// BenchmarkVerifierMemory reports the heap a Verifier holds per known host.
func BenchmarkVerifierMemory(b *testing.B) {
	for _, hosts := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			key := rawKey(1)
			kr := KeyringFunc(func(uint32) ([]byte, bool) { return key, true })
			var perHost float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				v := mustVerifier(b, kr, ToController)
				for id := range uint32(hosts) {
					if _, err := v.PreparedKey(id); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perHost = float64(after.HeapAlloc-before.HeapAlloc) / float64(hosts)
				runtime.KeepAlive(v)
			}
			b.ReportMetric(perHost, "bytes/host")
		})
	}
}

// BenchmarkDeltaCodec: the v1 JSON body codec on a 1,000-endpoint delta
// (encode into a frame, then read and decode it).
func BenchmarkDeltaCodec(b *testing.B) {
	d := &Delta{FromVersion: 1, ToVersion: 2}
	for i := range 1000 {
		data, _ := json.Marshal(map[string]any{"ip": fmt.Sprintf("10.0.%d.%d", i/256, i%256), "mac": "02:00:00:00:00:01", "subnet": "acme/a", "host": "h1"})
		d.Upserts = append(d.Upserts, Resource{Key: ResourceKey{Type: "endpoint", ID: fmt.Sprintf("acme/ep-%d", i)}, Data: data})
	}
	frame, err := AppendMessage(nil, d, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		if buf, err = AppendMessage(buf[:0], d, 0); err != nil {
			b.Fatal(err)
		}
		fr := NewFrameReader(bytes.NewReader(buf), 0)
		t, body, err := fr.Next()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeMessage(t, body); err != nil {
			b.Fatal(err)
		}
	}
}
