package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
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
	data, err := c.call(ctx, http.MethodGet, APIPrefix+"/ca", nil, nil)
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
	data, err := c.call(ctx, method, path, nil, body)
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
