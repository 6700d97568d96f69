package auth

import (
	"net/http"
	"strings"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Authenticator tells who a request is from its bearer token or its
// client certificate (verified by the TLS server against the cluster CA
// and any other client CA it was given).
type Authenticator struct {
	tokens *Tokens
	hosts  Lookup
}

// NewAuthenticator authenticates with tokens; hosts gives the Hosts that
// agent credentials are bound to.
func NewAuthenticator(tokens *Tokens, hosts Lookup) *Authenticator {
	return &Authenticator{tokens: tokens, hosts: hosts}
}

// Authenticate returns the request's identity, nil if it carries no
// credential, or ErrUnauthenticated. A bearer token counts before a
// client certificate.
func (a *Authenticator) Authenticate(r *http.Request) (*Identity, error) {
	var id *Identity
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return nil, ErrUnauthenticated
		}
		return a.Token(strings.TrimSpace(tok))
	} else if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		leaf := r.TLS.VerifiedChains[0][0]
		if len(leaf.URIs) != 1 {
			return nil, ErrUnauthenticated
		}
		s, uid, err := parseCertURI(leaf.URIs[0])
		if err != nil || (s.Role == RoleAgent && uid == "") || s.Role == RoleBootstrap {
			return nil, ErrUnauthenticated
		}
		id = &Identity{Subject: "cert/" + leaf.Subject.CommonName, Role: s.Role, Tenant: s.Tenant, Host: s.Host, HostUID: uid}
	} else {
		return nil, nil
	}
	return a.bound(id)
}

// Token returns the identity of a bearer token, or ErrUnauthenticated.
func (a *Authenticator) Token(tok string) (*Identity, error) {
	id, err := a.tokens.lookup(tok)
	if err != nil {
		return nil, err
	}
	return a.bound(id)
}

// bound refuses an agent credential whose Host is gone, or is another
// Host of the same name.
func (a *Authenticator) bound(id *Identity) (*Identity, error) {
	if uid, _ := HostUID(a.hosts, id.Host); id.Role == RoleAgent && uid != id.HostUID {
		return nil, ErrUnauthenticated
	}
	return id, nil
}

// HostUID returns the UID of a Host, false if there is none.
func HostUID(l Lookup, host string) (string, bool) {
	if o, ok := l.Get(apiv1.KindHost, "", host); ok {
		return o.GetObjectMeta().UID, true
	}
	return "", false
}
