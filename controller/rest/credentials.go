package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/hostkey"
)

// Tokens manages API tokens (auth.Tokens).
type Tokens interface {
	Create(ctx context.Context, req auth.TokenRequest) (auth.NewToken, error)
	List() []auth.Token
	Revoke(ctx context.Context, id string) (auth.Token, error)
}

// Enroller turns a bootstrap token into a host's credentials (hostkey.Enroller).
type Enroller interface {
	Enroll(ctx context.Context, id *auth.Identity, req hostkey.EnrollRequest) (hostkey.Enrolment, error)
}

// CA is the cluster CA (secrets.CA).
type CA interface {
	CertPEM() []byte
	SignCSR(csrPEM []byte, identity *url.URL, validity time.Duration, now time.Time) ([]byte, error)
}

// certRequest is the body of POST /apis/weft/v1/certificates.
type certRequest struct {
	CSR string `json:"csr"`
	auth.Scope
	TTL string `json:"ttl,omitempty"`
}

// certAnswer is the answer of POST /apis/weft/v1/certificates.
type certAnswer struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// defaultCertTTL is a client certificate's validity when none is asked for.
const defaultCertTTL = 365 * 24 * time.Hour

// credentialRoutes serves the credential endpoints:
//
//	POST   tokens        cluster-admin: create a token (its secret is in this answer only)
//	GET    tokens        cluster-admin: list the tokens (no secrets)
//	DELETE tokens/{id}   cluster-admin: revoke a token
//	POST   enroll        bootstrap token of the host: the host's key, agent token and CA
//	POST   certificates  cluster-admin: sign a CSR into a client certificate
//	GET    ca            anyone: the cluster CA certificate (PEM)
func (s *server) credentialRoutes(mux *http.ServeMux, base string) {
	if t := s.cfg.Tokens; t != nil {
		mux.HandleFunc("POST "+base+"tokens", s.admin(func(w http.ResponseWriter, r *http.Request) {
			var req auth.TokenRequest
			if err := s.readJSON(w, r, &req); err != nil {
				WriteError(w, err)
				return
			}
			setAudit(r, "token role="+req.Role+" tenant="+req.Tenant+" host="+req.Host)
			nt, err := t.Create(r.Context(), req)
			if err != nil {
				WriteError(w, err)
				return
			}
			setAudit(r, "token/"+nt.ID)
			writeJSON(w, http.StatusCreated, nt)
		}))
		mux.HandleFunc("GET "+base+"tokens", s.admin(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"items": t.List()})
		}))
		mux.HandleFunc("DELETE "+base+"tokens/{id}", s.admin(func(w http.ResponseWriter, r *http.Request) {
			setAudit(r, "token/"+r.PathValue("id"))
			tok, err := t.Revoke(r.Context(), r.PathValue("id"))
			if err != nil {
				WriteError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, tok)
		}))
	}
	if e := s.cfg.Enroller; e != nil {
		mux.HandleFunc("POST "+base+"enroll", func(w http.ResponseWriter, r *http.Request) {
			var req hostkey.EnrollRequest
			if err := s.readJSON(w, r, &req); err != nil {
				WriteError(w, err)
				return
			}
			setAudit(r, apiv1.Ref{Kind: apiv1.KindHost, Name: req.Host}.String())
			out, err := e.Enroll(r.Context(), identity(r), req)
			if err != nil {
				WriteError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, out)
		})
	}
	if ca := s.cfg.CA; ca != nil {
		mux.HandleFunc("GET "+base+"ca", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/x-pem-file")
			_, _ = w.Write(ca.CertPEM())
		})
		mux.HandleFunc("POST "+base+"certificates", s.admin(func(w http.ResponseWriter, r *http.Request) {
			var req certRequest
			if err := s.readJSON(w, r, &req); err != nil {
				WriteError(w, err)
				return
			}
			setAudit(r, "certificate role="+req.Role+" tenant="+req.Tenant+" host="+req.Host)
			cert, err := s.signCert(req)
			if err != nil {
				WriteError(w, err)
				return
			}
			writeJSON(w, http.StatusCreated, certAnswer{Certificate: string(cert), CA: string(ca.CertPEM())})
		}))
	}
}

// signCert issues the client certificate of a request; an agent's is
// bound to the UID its Host has now.
func (s *server) signCert(req certRequest) ([]byte, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if req.Role == auth.RoleBootstrap {
		return nil, apiv1.NewBadRequest("role bootstrap: a bootstrap credential is a token (weft token create --role bootstrap)")
	}
	ttl := defaultCertTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return nil, apiv1.NewBadRequest("ttl %q: want a positive duration such as 8760h", req.TTL)
		}
		ttl = d
	}
	var uid string
	if req.Role == auth.RoleAgent {
		var ok bool
		if s.cfg.Lookup == nil {
			return nil, apiv1.NewBadRequest("agent certificates need the store")
		}
		if uid, ok = auth.HostUID(s.cfg.Lookup, req.Host); !ok {
			return nil, apiv1.NewNotFound(apiv1.Ref{Kind: apiv1.KindHost, Name: req.Host})
		}
	}
	cert, err := s.cfg.CA.SignCSR([]byte(req.CSR), auth.CertURI(req.Scope, uid), ttl, time.Now())
	if err != nil {
		return nil, apiv1.NewBadRequest("%v", err)
	}
	return cert, nil
}

// admin lets only cluster admins through to h.
func (s *server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if id := identity(r); id.Role != auth.RoleClusterAdmin {
			WriteError(w, apiv1.NewForbidden("forbidden: managing credentials takes a cluster-admin credential"))
			return
		}
		h(w, r)
	}
}

// readJSON decodes a strict JSON body into v.
func (s *server) readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return apiv1.NewBadRequest("request body: %v", err)
	}
	return nil
}
