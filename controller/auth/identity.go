package auth

import (
	"fmt"
	"net/url"
	"strings"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Roles.
const (
	RoleClusterAdmin = "cluster-admin"
	RoleTenantAdmin  = "tenant-admin"
	RoleTenantViewer = "tenant-viewer"
	RoleAgent        = "agent"
	RoleBootstrap    = "bootstrap"
)

// Identity is who a request acts as.
type Identity struct {
	// Subject names the credential in logs: "token/<id>", "cert/<CN>", or
	// "anonymous" (an insecure API's requests without a credential).
	Subject string
	// Role and its scope: Tenant for the tenant roles, Host (and the UID of
	// the Host it is bound to) for agent and bootstrap.
	Role, Tenant, Host, HostUID string
	// TokenID is the token's ID ("" for a certificate).
	TokenID string
}

// Anonymous is who an insecure API's requests without a credential act
// as: a cluster admin.
var Anonymous = Identity{Subject: "anonymous", Role: RoleClusterAdmin}

// Scope is a role and what it is bound to, as a token or certificate is
// requested.
type Scope struct {
	Role   string `json:"role"`
	Tenant string `json:"tenant,omitempty"`
	Host   string `json:"host,omitempty"`
}

// Validate reports a role that does not exist or a scope that does not fit
// its role: the tenant roles need a tenant, agent and bootstrap a host,
// and nothing else takes either.
func (s Scope) Validate() error {
	var needTenant, needHost bool
	switch s.Role {
	case RoleClusterAdmin:
	case RoleTenantAdmin, RoleTenantViewer:
		needTenant = true
	case RoleAgent, RoleBootstrap:
		needHost = true
	default:
		return apiv1.NewBadRequest("role %q: want one of %s, %s, %s, %s, %s", s.Role,
			RoleClusterAdmin, RoleTenantAdmin, RoleTenantViewer, RoleAgent, RoleBootstrap)
	}
	switch {
	case needTenant != (s.Tenant != ""):
		return apiv1.NewBadRequest("role %s: tenant %s", s.Role, map[bool]string{true: "required", false: "not allowed"}[needTenant])
	case needHost != (s.Host != ""):
		return apiv1.NewBadRequest("role %s: host %s", s.Role, map[bool]string{true: "required", false: "not allowed"}[needHost])
	}
	for _, n := range []string{s.Tenant, s.Host} {
		if n != "" && !objectName(n) {
			return apiv1.NewBadRequest("name %q: want an object name (at most 63 of a-z, 0-9 and '-')", n)
		}
	}
	return nil
}

// objectName reports whether s may be an object's name as far as a scope
// needs (no '/', bounded); the API validates names fully.
func objectName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// CertURI is the URI SAN that carries a client certificate's scope (and,
// for an agent, the UID of the Host it is bound to).
func CertURI(s Scope, hostUID string) *url.URL {
	p := "/" + s.Role
	if s.Tenant != "" {
		p += "/tenant/" + s.Tenant
	}
	if s.Host != "" {
		p += "/host/" + s.Host
	}
	if hostUID != "" {
		p += "/uid/" + hostUID
	}
	return &url.URL{Scheme: "weft", Host: "role", Path: p}
}

// parseCertURI reads what CertURI wrote.
func parseCertURI(u *url.URL) (Scope, string, error) {
	if u.Scheme != "weft" || u.Host != "role" || u.RawQuery != "" || u.Fragment != "" {
		return Scope{}, "", fmt.Errorf("certificate identity %q: not weft://role/...", u)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	s := Scope{Role: parts[0]}
	var uid string
	if len(parts)%2 != 1 {
		return Scope{}, "", fmt.Errorf("certificate identity %q: odd path", u)
	}
	for i := 1; i < len(parts); i += 2 {
		v := parts[i+1]
		switch parts[i] {
		case "tenant":
			s.Tenant = v
		case "host":
			s.Host = v
		case "uid":
			uid = v
		default:
			return Scope{}, "", fmt.Errorf("certificate identity %q: unknown part %q", u, parts[i])
		}
	}
	if err := s.Validate(); err != nil {
		return Scope{}, "", fmt.Errorf("certificate identity %q: %w", u, err)
	}
	return s, uid, nil
}
