package wire

// Benchmarks that chose how the config stream is secured (see "Choosing the
// handshake" in doc.go): the PSK handshake of this package against a TLS
// 1.3 handshake with certificates on both sides, the cost of a sealed
// frame against a TLS record and a frame in clear, and the memory of an
// idle connection of each kind.

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// BenchmarkHandshake measures the CPU of one handshake, without I/O:
// psk-agent signs a Hello, derives the session keys from the Accept and
// opens the sealed Welcome; psk-controller verifies the Hello, draws a
// nonce, derives the keys and seals the Welcome. tls13-mutual is a whole
// TLS 1.3 handshake, both ends, over net.Pipe with GOMAXPROCS 1 (the two
// ends take turns: the time is the sum of both ends' CPU), with ECDSA
// P-256 certificates from one CA on both sides (no resumption: a cold
// start meets every agent fresh); the primitives it spends most of its
// time in are measured alone beside it.
func BenchmarkHandshake(b *testing.B) {
	key := rawKey(1)
	now := time.Now()
	hello := &Hello{Host: "host-00001", HostID: 1, AgentVersion: "v1", Nonce: bytes.Repeat([]byte{1}, MinNonceLen), Time: now.Unix()}
	if err := SignHello(hello, key); err != nil {
		b.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{2}, AcceptNonceLen)
	welcome := &Welcome{HostID: 1, Epoch: 3, Replicas: []string{"127.0.0.1:7444", "127.0.0.2:7444", "127.0.0.3:7444"}}
	ks, err := deriveSession(key, hello.MAC, nonce)
	if err != nil {
		b.Fatal(err)
	}
	sealedWelcome := sealStream(b, &frameSealer{aead: ks.toAgent}, welcome)

	b.Run("psk-agent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := *hello
			if err := SignHello(&h, key); err != nil {
				b.Fatal(err)
			}
			ks, err := deriveSession(key, h.MAC, nonce)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := openStream(&frameSealer{aead: ks.toAgent}, sealedWelcome); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("psk-controller", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := VerifyHello(hello, key, now, time.Minute); err != nil {
				b.Fatal(err)
			}
			n := make([]byte, AcceptNonceLen)
			rand.Read(n)
			ks, err := deriveSession(key, hello.MAC, n)
			if err != nil {
				b.Fatal(err)
			}
			sealStream(b, &frameSealer{aead: ks.toAgent}, welcome)
		}
	})
	b.Run("tls13-mutual", func(b *testing.B) {
		server, client := tlsConfigs(b)
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		b.ReportAllocs()
		for b.Loop() {
			cn, sn := net.Pipe()
			tlsHandshake(b, client, server, cn, sn)
			cn.Close()
			sn.Close()
		}
	})
	b.Run("ecdsa-p256-sign", func(b *testing.B) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		digest := sha256.Sum256([]byte("transcript"))
		for b.Loop() {
			if _, err := ecdsa.SignASN1(rand.Reader, k, digest[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ecdsa-p256-verify", func(b *testing.B) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		digest := sha256.Sum256([]byte("transcript"))
		sig, _ := ecdsa.SignASN1(rand.Reader, k, digest[:])
		for b.Loop() {
			if !ecdsa.VerifyASN1(&k.PublicKey, digest[:], sig) {
				b.Fatal("verify failed")
			}
		}
	})
	b.Run("x25519-keygen-and-exchange", func(b *testing.B) {
		peer, _ := ecdh.X25519().GenerateKey(rand.Reader)
		for b.Loop() {
			k, err := ecdh.X25519().GenerateKey(rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := k.ECDH(peer.PublicKey()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// tlsConfigs returns the TLS 1.3 configurations of a controller and an
// agent that authenticate each other with certificates of one CA.
func tlsConfigs(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) tls.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{cn},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{leaf(2, "controller", x509.ExtKeyUsageServerAuth)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, SessionTicketsDisabled: true}
	client = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{leaf(3, "host-00001", x509.ExtKeyUsageClientAuth)},
		RootCAs: pool, ServerName: "controller"}
	return server, client
}

// tlsHandshake wraps both ends of a connection in TLS 1.3 and runs the
// handshake.
func tlsHandshake(tb testing.TB, client, server *tls.Config, cn, sn net.Conn) (net.Conn, net.Conn) {
	tb.Helper()
	tc, ts := tls.Client(cn, client), tls.Server(sn, server)
	errc := make(chan error, 1)
	go func() { errc <- ts.Handshake() }()
	if err := tc.Handshake(); err != nil {
		tb.Fatal(err)
	}
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	return tc, ts
}

// BenchmarkSecuredRoundTrip is BenchmarkConnRoundTrip (a 5 KB snapshot to
// the agent, its Ack back, over net.Pipe) in clear, with sealed frames and
// over TLS 1.3.
func BenchmarkSecuredRoundTrip(b *testing.B) {
	d := snapshotDelta(b)
	ack := &Ack{Version: d.ToVersion}
	for _, mode := range []string{"clear", "sealed", "tls13"} {
		b.Run(mode, func(b *testing.B) {
			cn, sn := net.Pipe()
			b.Cleanup(func() { cn.Close(); sn.Close() })
			if mode == "tls13" {
				server, client := tlsConfigs(b)
				cn, sn = tlsHandshake(b, client, server, cn, sn)
			}
			agent, ctrl := NewConn(cn, 0), NewConn(sn, 0)
			if mode == "sealed" {
				ks, err := deriveSession(rawKey(1), bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, AcceptNonceLen))
				if err != nil {
					b.Fatal(err)
				}
				agent.secure(ks.toController, ks.toAgent)
				ctrl.secure(ks.toAgent, ks.toController)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			defer wg.Wait()
			defer agent.Close()
			wg.Go(func() { // the agent: read a delta, answer an Ack
				for {
					if _, err := agent.ReadMessage(ctx); err != nil {
						return
					}
					if err := agent.WriteMessage(ctx, ack); err != nil {
						return
					}
				}
			})
			b.ReportAllocs()
			for b.Loop() {
				if err := ctrl.WriteMessage(ctx, d); err != nil {
					b.Fatal(err)
				}
				if _, err := ctrl.ReadMessage(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealFrame is the CPU of sealing and opening one frame of each
// size, alone.
func BenchmarkSealFrame(b *testing.B) {
	for _, size := range []int{64, 5 << 10, 1 << 20} {
		b.Run(byteSize(size), func(b *testing.B) {
			seal, open := sealers(b, true)
			frame, _ := AppendFrame(nil, FrameDelta, make([]byte, size), 0)
			buf := make([]byte, 0, len(frame)+SealOverhead)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				out, err := seal.seal(append(buf[:0], frame...), 0)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := open.open(FrameDelta, out[FrameHeaderLen:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20:
		return "1MiB"
	case n >= 1<<10:
		return "5KiB"
	}
	return "64B"
}

// BenchmarkSecuredIdleMemory is BenchmarkConnIdleMemory on the
// controller's end for a session in clear, a sealed one and one over TLS
// 1.3.
func BenchmarkSecuredIdleMemory(b *testing.B) {
	const n = 1000
	for _, mode := range []string{"clear", "sealed", "tls13"} {
		b.Run(mode, func(b *testing.B) {
			var perConn float64
			for b.Loop() {
				perConn = securedIdleBytes(b, n, mode)
			}
			b.ReportMetric(perConn, "bytes/conn")
		})
	}
}

func securedIdleBytes(tb testing.TB, n int, mode string) float64 {
	d := snapshotDelta(tb)
	server, client := tlsConfigs(tb)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var closers []net.Conn
	defer func() {
		cancel()
		for _, c := range closers {
			c.Close()
		}
		wg.Wait()
	}()
	pairs := make([][2]net.Conn, n)
	for i := range pairs {
		pairs[i][0], pairs[i][1] = loopbackPair(tb)
		closers = append(closers, pairs[i][0], pairs[i][1])
	}
	before := liveHeap()
	conns := make([]*Conn, 2*n)
	for i, p := range pairs {
		sn, cn := p[0], p[1]
		if mode == "tls13" {
			cn, sn = tlsHandshake(tb, client, server, cn, sn)
		}
		ctrl, agent := NewConn(sn, 0), NewConn(cn, 0)
		if mode == "sealed" {
			ks, err := deriveSession(rawKey(1), bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, AcceptNonceLen))
			if err != nil {
				tb.Fatal(err)
			}
			agent.secure(ks.toController, ks.toAgent)
			ctrl.secure(ks.toAgent, ks.toController)
		}
		errc := make(chan error, 1)
		go func() {
			if _, err := agent.ReadMessage(ctx); err != nil {
				errc <- err
				return
			}
			errc <- agent.WriteMessage(ctx, &Ack{Version: d.ToVersion})
		}()
		if err := ctrl.WriteMessage(ctx, d); err != nil {
			tb.Fatal(err)
		}
		if _, err := ctrl.ReadMessage(ctx); err != nil {
			tb.Fatal(err)
		}
		if err := <-errc; err != nil {
			tb.Fatal(err)
		}
		conns[2*i], conns[2*i+1] = ctrl, agent
		wg.Go(func() { ctrl.ReadMessage(ctx) })
	}
	time.Sleep(200 * time.Millisecond) // let the readers block
	after := liveHeap()
	runtime.KeepAlive(conns)
	// The agents' ends are in the heap too; each side holds about as much.
	return float64(int64(after)-int64(before)) / float64(2*n)
}
