package controller_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/weftnet/weft/controller"
)

// pki writes a CA and certificates it signs (PEM) into dir.
type pki struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(t *testing.T, dir, name string) *pki {
	t.Helper()
	p := &pki{dir: dir}
	p.cert, p.key = p.issue(t, name, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	return p
}

// issue signs tmpl for cn (self-signed if p has no CA yet) and writes
// CN.pem and CN.key.
func (p *pki) issue(t *testing.T, cn string, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.Subject = pkix.Name{CommonName: cn}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	parent, signer := tmpl, key
	if p.cert != nil {
		parent, signer = p.cert, p.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, cn+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, cn+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (p *pki) file(name string) string { return filepath.Join(p.dir, name) }

func mustURL(t *testing.T, s string) []url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return []url.URL{*u}
}

func freeURL(t *testing.T, scheme string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return scheme + "://" + l.Addr().String()
}

// TestExternalEtcdTLS runs a replica on an etcd that serves clients only
// over TLS with client certificates: with the CA and a certificate it
// starts; without the certificate, or trusting another CA, it does not.
func TestExternalEtcdTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newPKI(t, dir, "ca")
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	ca.issue(t, "etcd", &x509.Certificate{ExtKeyUsage: both, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	ca.issue(t, "weft", &x509.Certificate{ExtKeyUsage: both})
	other := newPKI(t, t.TempDir(), "other")

	ec := embed.NewConfig()
	ec.Dir = t.TempDir()
	ec.LogLevel = "error"
	client, peer := freeURL(t, "https"), freeURL(t, "http")
	cu, pu := mustURL(t, client), mustURL(t, peer)
	ec.ListenClientUrls, ec.AdvertiseClientUrls = cu, cu
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = pu, pu
	ec.InitialCluster = ec.Name + "=" + peer
	ec.ClientTLSInfo.CertFile, ec.ClientTLSInfo.KeyFile = ca.file("etcd.pem"), ca.file("etcd.key")
	ec.ClientTLSInfo.TrustedCAFile, ec.ClientTLSInfo.ClientCertAuth = ca.file("ca.pem"), true
	e, err := embed.StartEtcd(ec)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready")
	}

	for _, tc := range []struct {
		name              string
		caFile, cert, key string
		ok                bool
	}{
		{"CA and certificate", ca.file("ca.pem"), ca.file("weft.pem"), ca.file("weft.key"), true},
		{"no certificate", ca.file("ca.pem"), "", "", false},
		{"another CA", other.file("other.pem"), ca.file("weft.pem"), ca.file("weft.key"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := controller.New(controller.Config{DataDir: t.TempDir(), EtcdEndpoints: []string{client}, APIListen: "127.0.0.1:0", AgentListen: "off",
				EtcdCACert: tc.caFile, EtcdCert: tc.cert, EtcdKey: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err = c.Start(ctx)
			defer c.Close()
			if tc.ok != (err == nil) {
				t.Fatalf("Start = %v, want success %v", err, tc.ok)
			}
		})
	}
}

func TestEtcdConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  controller.Config
		want string
	}{
		{"TLS without endpoints", controller.Config{DataDir: "d", EtcdCACert: "ca.pem"}, "external etcd"},
		{"user without endpoints", controller.Config{DataDir: "d", EtcdUser: "u"}, "external etcd"},
		{"half a certificate", controller.Config{DataDir: "d", EtcdEndpoints: []string{"https://e:2379"}, EtcdCert: "c.pem"}, "both an etcd client certificate and its key"},
		{"password without user", controller.Config{DataDir: "d", EtcdEndpoints: []string{"https://e:2379"}, EtcdPassword: "p"}, "without a user"},
		{"TLS to plain HTTP", controller.Config{DataDir: "d", EtcdEndpoints: []string{"http://e:2379"}, EtcdCACert: "ca.pem"}, "plain HTTP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := controller.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
