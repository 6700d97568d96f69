package secrets

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftnet/weft/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.key")
	k1, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created || len(k1) != KeySize {
		t.Fatalf("first load: %x %v %v", k1, created, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v (%v), want 0600", fi.Mode(), err)
	}
	k2, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: %x %v %v, want the first key", k2, created, err)
	}
	if err := WriteKeyFile(path, k1); err == nil {
		t.Error("WriteKeyFile overwrote a key file")
	}
	bad := filepath.Join(t.TempDir(), "bad")
	_ = os.WriteFile(bad, []byte("not hex\n"), 0o600)
	if _, _, err := LoadOrCreateKeyFile(bad); err == nil {
		t.Error("a garbled key file loaded")
	}
	for _, s := range []string{"", "zz", "abcd", string(bytes.Repeat([]byte("ab"), 33))} {
		if _, err := ParseKey(s); err == nil {
			t.Errorf("ParseKey(%q) accepted", s)
		}
	}
}

// FuzzParseKey: host keys and the cluster key come from files and from
// the enrolment answer; what parses is KeySize bytes.
func FuzzParseKey(f *testing.F) {
	f.Add(string(bytes.Repeat([]byte("0f"), 32)) + "\n")
	f.Add("  " + string(bytes.Repeat([]byte("A0"), 32)))
	f.Add("xyz")
	f.Fuzz(func(t *testing.T, s string) {
		if k, err := ParseKey(s); err == nil && len(k) != KeySize {
			t.Fatalf("ParseKey(%q) = %d bytes", s, len(k))
		}
	})
}

func TestSeal(t *testing.T) {
	s, _ := NewSealer(bytes.Repeat([]byte{1}, KeySize))
	other, _ := NewSealer(bytes.Repeat([]byte{2}, KeySize))
	sealed := s.Seal("/weft/hostkeys/u1", []byte("secret"))
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("the plaintext shows in the sealed value")
	}
	if pt, err := s.Open("/weft/hostkeys/u1", sealed); err != nil || string(pt) != "secret" {
		t.Fatalf("Open: %q %v", pt, err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	for name, tc := range map[string]struct {
		s   *Sealer
		key string
		val []byte
	}{
		"another etcd key":     {s, "/weft/hostkeys/u2", sealed},
		"another cluster key":  {other, "/weft/hostkeys/u1", sealed},
		"a flipped bit":        {s, "/weft/hostkeys/u1", flipped},
		"too short":            {s, "/weft/hostkeys/u1", sealed[:20]},
		"another version byte": {s, "/weft/hostkeys/u1", append([]byte{9}, sealed[1:]...)},
	} {
		if _, err := tc.s.Open(tc.key, tc.val); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	if _, err := NewSealer([]byte("short")); err == nil {
		t.Error("NewSealer took a short key")
	}
}

// FuzzOpen: only the value Seal made opens, and only under its name.
func FuzzOpen(f *testing.F) {
	s, _ := NewSealer(bytes.Repeat([]byte{1}, KeySize))
	const name = "/weft/secrets/ca"
	// As Seal makes it, with a fixed nonce: the fuzzing workers make the
	// same value as the process that seeded them.
	nonce := make([]byte, 1+s.aead.NonceSize())
	nonce[0] = sealVersion
	sealed := s.aead.Seal(nonce, nonce[1:], []byte("the CA key"), []byte(name))
	f.Add(name, sealed)
	f.Add(name, sealed[:13])
	f.Add("x", []byte{})
	f.Fuzz(func(t *testing.T, n string, b []byte) {
		pt, err := s.Open(n, b)
		if err == nil && (n != name || !bytes.Equal(b, sealed) || string(pt) != "the CA key") {
			t.Fatalf("Open(%q, %x) = %q: a value Seal did not make opened", n, b, pt)
		}
	})
}

func TestCA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := etcdtest.Start(t)
	s, _ := NewSealer(bytes.Repeat([]byte{1}, KeySize))
	// Replicas starting together agree on one CA.
	cas := make([]*CA, 4)
	made := make([]bool, 4)
	var wg sync.WaitGroup
	for i := range cas {
		wg.Go(func() {
			var err error
			if cas[i], made[i], err = LoadOrCreateCA(ctx, env.Client, "/weft/ca/cert", "/weft/secrets/ca", s); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	n := 0
	for i, ca := range cas {
		if made[i] {
			n++
		}
		if ca == nil || !bytes.Equal(ca.CertPEM(), cas[0].CertPEM()) {
			t.Fatalf("replica %d has another CA", i)
		}
	}
	if n != 1 {
		t.Errorf("%d replicas created the CA, want 1", n)
	}
	other, _ := NewSealer(bytes.Repeat([]byte{2}, KeySize))
	if _, _, err := LoadOrCreateCA(ctx, env.Client, "/weft/ca/cert", "/weft/secrets/ca", other); err == nil {
		t.Error("the CA loaded with another cluster key")
	}
	ca := cas[0]
	now := time.Now()
	serving, err := ca.ServingCert([]string{"127.0.0.1", "ctl.example", ""}, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(serving.Certificate[0])
	for _, name := range []string{"127.0.0.1", "ctl.example"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool()}); err != nil {
			t.Errorf("serving certificate for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: ca.Pool()}); err == nil {
		t.Error("serving certificate verifies for a name it was not issued for")
	}

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "alice"}, DNSNames: []string{"evil.example"}}, key)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	id := &url.URL{Scheme: "weft", Host: "role", Path: "/tenant-viewer/tenant/acme"}
	certPEM, err := ca.SignCSR(csr, id, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(b.Bytes)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if cert.Subject.CommonName != "alice" || len(cert.URIs) != 1 || *cert.URIs[0] != *id || len(cert.DNSNames) != 0 {
		t.Errorf("client certificate for %v, URIs %v, DNS names %v", cert.Subject, cert.URIs, cert.DNSNames)
	}
	for name, bad := range map[string][]byte{"not PEM": []byte("x"), "a certificate": certPEM} {
		if _, err := ca.SignCSR(bad, id, time.Hour, now); err == nil {
			t.Errorf("SignCSR of %s accepted", name)
		}
	}
	if _, err := ca.SignCSR(csr, id, 100*365*24*time.Hour, now); err == nil {
		t.Error("SignCSR for a century accepted")
	}
}
