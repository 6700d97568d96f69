package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sync"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Identity is who a login token belongs to, as the controller's
// authentication knows it.
type Identity struct {
	// Subject names the credential: a token id or a user name.
	Subject string `json:"subject"`
	// Role is cluster-admin, tenant-admin or tenant-viewer.
	Role string `json:"role"`
	// Tenant is the tenant a tenant role is bound to.
	Tenant string `json:"tenant,omitempty"`
}

// Authenticator checks a token given at login (a bearer token weft_…).
// An error refuses the login: a *apiv1.StatusError is answered with its
// code, any other error with 401.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// CSRFHeader carries the session's CSRF token on every request that is
// not a GET or HEAD.
const CSRFHeader = "X-Weft-CSRF"

// cookieName is the session cookie.
const cookieName = "weft_session"

// session is one browser's login: the credential the API calls are
// forwarded with stays here, on the server.
type session struct {
	id      string
	csrf    string
	token   string // "" in open mode
	ident   Identity
	expires time.Time
}

// sessions holds the live sessions of this replica, in memory: a session
// is bound to the replica it logged in at, and a restart logs everyone out.
type sessions struct {
	ttl time.Duration
	max int

	mu   sync.Mutex
	byID map[string]*session
	// open is the one session of every browser when the UI needs no login.
	open *session
}

func newSessions(ttl time.Duration, maxN int, open bool) *sessions {
	s := &sessions{ttl: ttl, max: maxN, byID: map[string]*session{}}
	if open {
		s.open = &session{csrf: randomToken(), ident: Identity{Subject: "anonymous"}}
	}
	return s
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session, making room by dropping expired sessions and,
// if still full, the one closest to expiry.
func (s *sessions) create(token string, id Identity, now time.Time) *session {
	ses := &session{id: randomToken(), csrf: randomToken(), token: token, ident: id, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.max {
		var oldest *session
		for k, o := range s.byID {
			if !now.Before(o.expires) {
				delete(s.byID, k)
			} else if oldest == nil || o.expires.Before(oldest.expires) {
				oldest = o
			}
		}
		if len(s.byID) >= s.max && oldest != nil {
			delete(s.byID, oldest.id)
		}
	}
	s.byID[ses.id] = ses
	return ses
}

// lookup returns the request's live session, or nil.
func (s *sessions) lookup(r *http.Request, now time.Time) *session {
	if s.open != nil {
		return s.open
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ses := s.byID[c.Value]
	if ses != nil && !now.Before(ses.expires) {
		delete(s.byID, ses.id)
		return nil
	}
	return ses
}

func (s *sessions) remove(ses *session) {
	s.mu.Lock()
	delete(s.byID, ses.id)
	s.mu.Unlock()
}

// sessionInfo is what the browser learns of its session.
type sessionInfo struct {
	AuthRequired bool   `json:"authRequired"`
	CSRF         string `json:"csrf"`
	Expires      string `json:"expires,omitempty"`
	Identity
}

func (h *Handler) info(ses *session) sessionInfo {
	in := sessionInfo{AuthRequired: h.sessions.open == nil, CSRF: ses.csrf, Identity: ses.ident}
	if !ses.expires.IsZero() {
		in.Expires = ses.expires.UTC().Format(time.RFC3339)
	}
	return in
}

// authed serves next to requests with a live session only, and to those
// that can change state only with the session's CSRF token, from this
// origin.
func (h *Handler) authed(next func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ses := h.sessions.lookup(r, time.Now())
		if ses == nil {
			writeStatus(w, apiv1.NewStatus(http.StatusUnauthorized, "Unauthorized", "no session: log in at %s", Prefix))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !sameOrigin(r) || subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(ses.csrf)) != 1 {
				writeStatus(w, apiv1.NewStatus(http.StatusForbidden, "Forbidden", "missing or wrong %s header (CSRF protection)", CSRFHeader))
				return
			}
		}
		next(w, r, ses)
	}
}

// sameOrigin refuses requests a browser marks as coming from another site.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	return true
}

// session answers GET /ui/session: the session's identity and CSRF token.
func (h *Handler) session(w http.ResponseWriter, r *http.Request) {
	ses := h.sessions.lookup(r, time.Now())
	if ses == nil {
		writeStatus(w, apiv1.NewStatus(http.StatusUnauthorized, "Unauthorized", "no session: log in"))
		return
	}
	writeJSON(w, http.StatusOK, h.info(ses))
}

// login answers POST /ui/login {"token": "weft_…"}: it checks the token
// and starts a session. A JSON body is required, which a cross-site form
// cannot send.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" || !sameOrigin(r) {
		writeStatus(w, apiv1.NewStatus(http.StatusForbidden, "Forbidden", "log in with a JSON body from this origin"))
		return
	}
	if h.sessions.open != nil {
		writeJSON(w, http.StatusOK, h.info(h.sessions.open))
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<10))
	if err == nil {
		err = json.Unmarshal(data, &body)
	}
	if err != nil || body.Token == "" {
		writeStatus(w, apiv1.NewBadRequest("want a JSON body {\"token\": \"weft_…\"}"))
		return
	}
	id, err := h.cfg.Auth.Authenticate(r.Context(), body.Token)
	if err != nil {
		var se *apiv1.StatusError
		if !errors.As(err, &se) {
			se = apiv1.NewStatus(http.StatusUnauthorized, "Unauthorized", "token refused")
		}
		h.log.Info("login refused", "remote", r.RemoteAddr, "code", se.Code)
		writeStatus(w, se)
		return
	}
	if old := h.sessions.lookup(r, time.Now()); old != nil {
		h.sessions.remove(old)
	}
	ses := h.sessions.create(body.Token, id, time.Now())
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: ses.id, Path: Prefix, Expires: ses.expires,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	h.log.Info("login", "subject", id.Subject, "role", id.Role, "tenant", id.Tenant, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, h.info(ses))
}

// logout answers POST /ui/logout: the session ends.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, ses *session) {
	if h.sessions.open == nil {
		h.sessions.remove(ses)
		h.log.Info("logout", "subject", ses.ident.Subject)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, struct{}{})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeStatus(w, apiv1.NewStatus(http.StatusInternalServerError, apiv1.ReasonInternal, "encode response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// writeStatus answers with a StatusError, as the REST API does.
func writeStatus(w http.ResponseWriter, se *apiv1.StatusError) {
	b, _ := json.Marshal(se)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(se.Code)
	_, _ = w.Write(append(b, '\n'))
}
