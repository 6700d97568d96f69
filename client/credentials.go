package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// TokenRequest asks for a bearer token (CreateToken).
type TokenRequest struct {
	// Role is cluster-admin, tenant-admin, tenant-viewer, agent or
	// bootstrap.
	Role string `json:"role"`
	// Tenant is the tenant of a tenant role.
	Tenant string `json:"tenant,omitempty"`
	// Host is the host of an agent or bootstrap token.
	Host string `json:"host,omitempty"`
	// TTL is how long the token is valid, a Go duration ("24h"); "" means
	// no expiry (bootstrap tokens: the controller's default, 1h).
	TTL string `json:"ttl,omitempty"`
	// Description says what the token is for.
	Description string `json:"description,omitempty"`
}

// Token describes a bearer token. Secret is set only in the answer of
// CreateToken: the controller stores a hash of it.
type Token struct {
	ID          string    `json:"id"`
	Secret      string    `json:"token,omitempty"`
	Role        string    `json:"role"`
	Tenant      string    `json:"tenant,omitempty"`
	Host        string    `json:"host,omitempty"`
	HostUID     string    `json:"hostUID,omitempty"`
	Expires     time.Time `json:"expires,omitzero"`
	Created     time.Time `json:"created,omitzero"`
	Description string    `json:"description,omitempty"`
}

// CreateToken creates a bearer token (cluster-admin only) and returns it
// with its secret, which cannot be read again.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (*Token, error) {
	var t Token
	if err := c.jsonCall(ctx, http.MethodPost, APIPrefix+"/tokens", req, &t); err != nil {
		return nil, fmt.Errorf("create a %s token: %w", req.Role, err)
	}
	return &t, nil
}

// ListTokens returns the tokens (without their secrets).
func (c *Client) ListTokens(ctx context.Context) ([]Token, error) {
	var list struct {
		Items []Token `json:"items"`
	}
	if err := c.jsonCall(ctx, http.MethodGet, APIPrefix+"/tokens", nil, &list); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return list.Items, nil
}

// RevokeToken deletes the token with the given ID: it is refused from then
// on, by every replica within a second.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("revoke a token: empty ID")
	}
	if err := c.jsonCall(ctx, http.MethodDelete, APIPrefix+"/tokens/"+url.PathEscape(id), nil, nil); err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	return nil
}

// EnrollRequest is what an agent sends with its bootstrap token.
type EnrollRequest struct {
	Host       string `json:"host"`
	UnderlayIP string `json:"underlayIP,omitempty"`
}

// Enrollment is a host's credential, the answer to Enroll.
type Enrollment struct {
	// HostUID is the UID of the Host object the credential is bound to.
	HostUID string `json:"hostUID"`
	// HostKey is the host's southbound key, 64 hex digits.
	HostKey string `json:"hostKey"`
	// Token is the agent's API token.
	Token string `json:"token"`
	// CA is the PEM of the cluster's CA.
	CA string `json:"ca"`
}

// Enroll exchanges the Client's bootstrap token (WithToken) for the
// credential of host: the controller creates the Host if it does not exist
// and consumes the token, which works once.
func (c *Client) Enroll(ctx context.Context, req EnrollRequest) (*Enrollment, error) {
	var e Enrollment
	if err := c.jsonCall(ctx, http.MethodPost, APIPrefix+"/enroll", req, &e); err != nil {
		return nil, fmt.Errorf("enrol host %s: %w", req.Host, err)
	}
	if e.HostKey == "" || e.Token == "" || e.CA == "" {
		return nil, fmt.Errorf("enrol host %s: the answer lacks the host key, the token or the CA", req.Host)
	}
	return &e, nil
}

// CertificateRequest asks the CA to sign a client certificate.
type CertificateRequest struct {
	// CSR is a PEM certificate signing request; its subject's common name
	// is the user's name.
	CSR    string `json:"csr"`
	Role   string `json:"role"`
	Tenant string `json:"tenant,omitempty"`
	Host   string `json:"host,omitempty"`
	// TTL is the certificate's lifetime, a Go duration ("" the
	// controller's default).
	TTL string `json:"ttl,omitempty"`
}

// Certificate is a signed client certificate and the CA's certificate, both
// PEM.
type Certificate struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// CreateCertificate has the weft CA sign a client certificate for the
// CSR's key (cluster-admin only).
func (c *Client) CreateCertificate(ctx context.Context, req CertificateRequest) (*Certificate, error) {
	var cert Certificate
	if err := c.jsonCall(ctx, http.MethodPost, APIPrefix+"/certificates", req, &cert); err != nil {
		return nil, fmt.Errorf("create a %s certificate: %w", req.Role, err)
	}
	return &cert, nil
}

// CA returns the PEM of the cluster's CA certificate (public: asked
// without a credential too).
func (c *Client) CA(ctx context.Context) ([]byte, error) {
	data, _, err := c.call(ctx, request{method: http.MethodGet, path: APIPrefix + "/ca"})
	if err != nil {
		return nil, fmt.Errorf("get the CA certificate: %w", err)
	}
	if b, _ := pem.Decode(data); b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("get the CA certificate: the answer is not a PEM certificate")
	}
	return data, nil
}

// jsonCall sends in (unless nil) as JSON and decodes a 2xx answer into out
// (unless nil).
func (c *Client) jsonCall(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode: %w", err)
		}
	}
	data, _, err := c.call(ctx, request{method: method, path: path, body: body})
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// PinnedCA learns the CA from a fingerprint given out of band (`weft token
// create --role bootstrap` prints it): it fetches the CA certificate from
// the controller at server (an https URL) and returns its PEM if the
// SHA-256 of its DER is fingerprint and the certificate the controller
// presented chains to it for the server's host name; else an error.
func PinnedCA(ctx context.Context, server string, fingerprint []byte) ([]byte, error) {
	base, err := normalizeServer(server)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("client: a pinned CA needs an https server, not %s", server)
	}
	var (
		mu   sync.Mutex
		peer []*x509.Certificate
	)
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The CA is not known yet: the controller's certificate is
		// verified below, against the CA the fingerprint authenticates,
		// before anything from this connection is trusted.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			mu.Lock()
			defer mu.Unlock()
			peer = cs.PeerCertificates
			return nil
		},
	}
	t := &http.Transport{TLSClientConfig: tc, TLSHandshakeTimeout: 5 * time.Second, DisableKeepAlives: true}
	c := &Client{base: base, hc: &http.Client{Transport: t}, timeout: DefaultTimeout}
	defer c.Close()
	caPEM, err := c.CA(ctx)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(caPEM)
	sum := sha256.Sum256(b.Bytes)
	if !bytes.Equal(sum[:], fingerprint) {
		return nil, &CertificateError{Server: base, Problem: "the pinned CA fingerprint does not match",
			Err: fmt.Errorf("the controller's CA is sha256:%x, the pin sha256:%x", sum, fingerprint)}
	}
	ca, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("client: the controller's CA: %w", err)
	}
	mu.Lock()
	chain := peer
	mu.Unlock()
	if len(chain) == 0 {
		return nil, fmt.Errorf("client: %s presented no certificate", base)
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), DNSName: u.Hostname()}
	opts.Roots.AddCert(ca)
	for _, ic := range chain[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := chain[0].Verify(opts); err != nil {
		why := certificateProblem(err)
		if why == "" {
			why = "its certificate does not chain to the pinned CA"
		}
		return nil, &CertificateError{Server: base, Problem: why, Err: err}
	}
	return caPEM, nil
}
