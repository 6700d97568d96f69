package rest

import (
	"net/http"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
)

// call is what a request's handlers tell the middleware: who it is and
// which object it writes (for the audit line).
type call struct {
	id     *auth.Identity
	object string
}

type callKey struct{}

// open are the paths served without a credential.
var open = map[string]bool{"/healthz": true, "/readyz": true, "/version": true, "/apis/weft/v1/ca": true}

// authenticate answers 401 to a request without a valid credential
// (without any: on an insecure API) and records the identity of the
// others for the handlers. Open paths are served to anyone.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if open[r.URL.Path] && r.Method == http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		var id *auth.Identity
		if s.cfg.Authenticator != nil {
			var err error
			if id, err = s.cfg.Authenticator.Authenticate(r); err != nil {
				WriteError(w, apiv1.NewUnauthorized("%v", err))
				return
			}
		}
		if id == nil {
			if !s.cfg.Insecure {
				w.Header().Set("WWW-Authenticate", `Bearer realm="weft"`)
				WriteError(w, apiv1.NewUnauthorized("this API needs a credential: a bearer token or a client certificate from the cluster CA"))
				return
			}
			id = &auth.Anonymous
		}
		if c, ok := r.Context().Value(callKey{}).(*call); ok {
			c.id = id
		}
		next.ServeHTTP(w, r)
	})
}

// identity returns who a request is; on open paths it is nobody (no
// role).
func identity(r *http.Request) *auth.Identity {
	if c, ok := r.Context().Value(callKey{}).(*call); ok && c.id != nil {
		return c.id
	}
	return &auth.Identity{Subject: "anonymous"}
}

// setAudit names the object a request writes, for the audit line.
func setAudit(r *http.Request, object string) {
	if c, ok := r.Context().Value(callKey{}).(*call); ok {
		c.object = object
	}
}
