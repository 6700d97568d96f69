package secrets

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// MemberValidity is the validity of a member certificate (MemberCert): a
// replica issues its own at every start.
const MemberValidity = MaxClientValidity

// EtcdCA returns the CA of an embedded etcd cluster's members, derived
// from the cluster key alone (HKDF-SHA256, info "weft etcd CA v1"): every
// replica given the cluster key file holds the same CA before any member
// runs. The cluster CA cannot play this part, as it lives in the etcd it
// would have to secure. Its certificates (MemberCert) authenticate members
// to each other and clients (replicas, weft etcd, weft backup) to members:
// whoever holds the cluster key is in, as whoever holds it can open every
// secret anyway.
//
// The key is the same for everyone; the certificate differs between
// calls only in its signature, which nobody checks on a trust anchor.
func EtcdCA(clusterKey []byte) (*CA, error) {
	if len(clusterKey) != KeySize {
		return nil, fmt.Errorf("secrets: cluster key has %d bytes, want %d", len(clusterKey), KeySize)
	}
	var key *ecdsa.PrivateKey
	// A scalar at or above the curve order is refused: derive again with
	// the next counter (the odds are about 2^-32 per try).
	for i := 0; key == nil; i++ {
		d, err := hkdf.Key(sha256.New, clusterKey, nil, "weft etcd CA v1/"+strconv.Itoa(i), 32)
		if err != nil {
			return nil, fmt.Errorf("secrets: derive the etcd CA key: %w", err)
		}
		key, _ = ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	}
	epoch := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	return selfSigned(key, "weft etcd CA", big.NewInt(1), epoch, epoch.AddDate(100, 0, 0))
}

// MemberCert issues a certificate for an etcd member or client named
// name, for both ends of TLS (members dial each other with the
// certificate they serve), for the names and addresses in sans, valid from
// now for MemberValidity, with a fresh key.
func (ca *CA) MemberCert(name string, sans []string, now time.Time) (tls.Certificate, error) {
	return ca.issue(name, sans, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, MemberValidity, now)
}

// CertKeyPEM encodes a certificate ServingCert or MemberCert issued as
// PEM: the certificate and its private key (PKCS #8).
func CertKeyPEM(c tls.Certificate) (certPEM, keyPEM []byte, err error) {
	if len(c.Certificate) == 0 {
		return nil, nil, fmt.Errorf("secrets: encode certificate: empty")
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("secrets: encode certificate key: %w", err)
	}
	return pemBlock("CERTIFICATE", c.Certificate[0]), pemBlock("PRIVATE KEY", der), nil
}

// MemberFiles are the PEM files of an etcd member's TLS (WriteMemberFiles).
type MemberFiles struct{ CAFile, CertFile, KeyFile string }

// WriteMemberFiles issues a member certificate for name and sans and
// writes it, its key (mode 0600) and the CA's certificate into dir
// (created 0700), replacing what is there.
func (ca *CA) WriteMemberFiles(dir, name string, sans []string, now time.Time) (MemberFiles, error) {
	f := MemberFiles{CAFile: filepath.Join(dir, "etcd-ca.pem"), CertFile: filepath.Join(dir, "etcd-member.pem"), KeyFile: filepath.Join(dir, "etcd-member-key.pem")}
	cert, err := ca.MemberCert(name, sans, now)
	if err != nil {
		return f, err
	}
	certPEM, keyPEM, err := CertKeyPEM(cert)
	if err != nil {
		return f, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, fmt.Errorf("secrets: etcd member files: %w", err)
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{f.CAFile, ca.certPEM, 0o644}, {f.CertFile, certPEM, 0o644}, {f.KeyFile, keyPEM, 0o600}} {
		if err := writeFileAtomic(w.path, w.data, w.mode); err != nil {
			return f, fmt.Errorf("secrets: etcd member files: %w", err)
		}
	}
	return f, nil
}

// ClientTLS is the TLS configuration of a client of the etcd members: it
// trusts the CA and presents a member certificate issued for name.
func (ca *CA) ClientTLS(name string, now time.Time) (*tls.Config, error) {
	cert, err := ca.MemberCert(name, nil, now)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}}, nil
}

// writeFileAtomic writes data to path through a temporary file renamed
// over it, so that a reader never sees half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
