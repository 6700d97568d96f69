package secrets

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Validity periods of what the CA issues.
const (
	caValidity      = 10 * 365 * 24 * time.Hour
	ServingValidity = 365 * 24 * time.Hour
	// MaxClientValidity caps a client certificate's lifetime.
	MaxClientValidity = 5 * 365 * 24 * time.Hour
)

// CA is the cluster's certificate authority.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// LoadOrCreateCA returns the cluster's CA, stored in etcd with its
// certificate (PEM) at certKey and its private key sealed at keyKey. The
// first replica to start creates it, in one transaction that only succeeds
// while certKey does not exist, so replicas starting together agree;
// created says whether this call made it.
func LoadOrCreateCA(ctx context.Context, kv clientv3.KV, certKey, keyKey string, s *Sealer) (ca *CA, created bool, err error) {
	fresh, err := newCA(time.Now())
	if err != nil {
		return nil, false, err
	}
	der, err := x509.MarshalECPrivateKey(fresh.key)
	if err != nil {
		return nil, false, fmt.Errorf("secrets: encode the CA key: %w", err)
	}
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(certKey), "=", 0)).
		Then(clientv3.OpPut(certKey, string(fresh.certPEM)), clientv3.OpPut(keyKey, string(s.Seal(keyKey, der)))).
		Else(clientv3.OpGet(certKey), clientv3.OpGet(keyKey)).
		Commit()
	if err != nil {
		return nil, false, fmt.Errorf("secrets: load or create the CA: %w", err)
	}
	if resp.Succeeded {
		return fresh, true, nil
	}
	certKVs, keyKVs := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
	if len(certKVs) != 1 || len(keyKVs) != 1 {
		return nil, false, fmt.Errorf("secrets: the CA at %s is incomplete (certificate or key missing)", certKey)
	}
	der, err = s.Open(keyKey, keyKVs[0].Value)
	if err != nil {
		return nil, false, fmt.Errorf("secrets: open the CA key (is this the cluster's key file?): %w", err)
	}
	ca, err = parseCA(certKVs[0].Value, der)
	return ca, false, err
}

func newCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("secrets: CA key: %w", err)
	}
	return selfSigned(key, "weft cluster CA", serial(), now.Add(-time.Hour), now.Add(caValidity))
}

// selfSigned makes the self-signed certificate of a CA that issues leaf
// certificates only.
func selfSigned(key *ecdsa.PrivateKey, name string, serial *big.Int, notBefore, notAfter time.Time) (*CA, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("secrets: %s certificate: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("secrets: %s certificate: %w", name, err)
	}
	return &CA{cert: cert, certPEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

func parseCA(certPEM, keyDER []byte) (*CA, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("secrets: the stored CA certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("secrets: the stored CA certificate: %w", err)
	}
	key, err := x509.ParseECPrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("secrets: the stored CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("secrets: the stored CA key does not match its certificate")
	}
	return &CA{cert: cert, certPEM: certPEM, key: key}, nil
}

// CertPEM returns the CA certificate (public).
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Pool returns a pool holding the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ServingCert issues a TLS server certificate for the names and addresses
// in sans (entries that parse as IPs become IP SANs), valid from now for
// ServingValidity, with a fresh key.
func (ca *CA) ServingCert(sans []string, now time.Time) (tls.Certificate, error) {
	return ca.issue("weft controller", sans, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, ServingValidity, now)
}

// issue issues a certificate with a fresh key for the common name cn, the
// names and addresses in sans and the extended key usages.
func (ca *CA) issue(cn string, sans []string, usages []x509.ExtKeyUsage, validity time.Duration, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("secrets: certificate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     ca.notAfter(now.Add(validity)),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if s != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("secrets: certificate for %s: %w", cn, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// SignCSR issues a client certificate for a PEM certificate request: its
// subject's common name is kept, its other names are not; the one URI SAN
// is identity (the credential's role and scope, see package auth). It is
// valid from now for validity (at most MaxClientValidity and the CA's own
// end).
func (ca *CA) SignCSR(csrPEM []byte, identity *url.URL, validity time.Duration, now time.Time) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("csr: want a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: signature: %w", err)
	}
	if csr.Subject.CommonName == "" {
		return nil, errors.New("csr: the subject needs a common name (the user name)")
	}
	if validity <= 0 || validity > MaxClientValidity {
		return nil, fmt.Errorf("csr: validity %v: want more than 0 and at most %v", validity, MaxClientValidity)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: csr.Subject.CommonName},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     ca.notAfter(now.Add(validity)),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{identity},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("csr: sign: %w", err)
	}
	return pemBlock("CERTIFICATE", der), nil
}

// notAfter caps t at the CA's own end.
func (ca *CA) notAfter(t time.Time) time.Time {
	if t.After(ca.cert.NotAfter) {
		return ca.cert.NotAfter
	}
	return t
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // never fails (crypto/rand)
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
