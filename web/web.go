package web

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
)

//go:embed assets
var assets embed.FS

// Prefix is where the controller mounts the UI.
const Prefix = "/ui/"

// HostLister lists hosts for the health map: the controller's registry
// (the List of controller/rest's Backend).
type HostLister interface {
	List(ctx context.Context, kind, tenant string, sel apiv1.LabelSelector) ([]apiv1.Object, int64)
}

// Config configures the UI handler.
type Config struct {
	// API is the REST API handler (controller/rest) the browser's calls are
	// forwarded to, with the session's credential.
	API http.Handler
	// Hosts backs the aggregated health map. Who may see it is decided by
	// API: the map is served only to a session that may list hosts there.
	Hosts HostLister
	// Auth checks the tokens given at login. Nil serves the UI without a
	// login, for a controller whose API has no authentication.
	Auth Authenticator
	// SessionTTL is how long a session lasts after login (default 8h).
	SessionTTL time.Duration
	// MaxSessions bounds the sessions kept; the oldest goes first (default 10,000).
	MaxSessions int
	// Logger receives structured logs (default: discard).
	Logger *slog.Logger
}

// Validate reports a missing setting.
func (c *Config) Validate() error {
	if c.API == nil || c.Hosts == nil {
		return errors.New("web: API and Hosts are required")
	}
	return nil
}

// Handler serves the UI under Prefix. It starts no goroutine of its own
// (a watch it serves runs inside its request), so it has no Start or
// Close: it lives as long as the server that mounts it.
type Handler struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	mux      *http.ServeMux
}

var _ http.Handler = (*Handler)(nil)

// New returns the UI handler.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 10_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, log: cfg.Logger.With("subsystem", "web"), sessions: newSessions(cfg.SessionTTL, cfg.MaxSessions, cfg.Auth == nil)}
	files := http.StripPrefix(Prefix, http.FileServerFS(static))
	mux := http.NewServeMux()
	mux.Handle("GET "+Prefix+"{$}", files)
	mux.Handle("GET "+Prefix+"static/", files)
	mux.HandleFunc("GET "+Prefix+"session", h.session)
	mux.HandleFunc("POST "+Prefix+"login", h.login)
	mux.HandleFunc("POST "+Prefix+"logout", h.authed(h.logout))
	mux.HandleFunc(Prefix+"apis/", h.authed(h.forward))
	mux.HandleFunc("GET "+Prefix+"version", h.authed(h.forward))
	mux.HandleFunc("GET "+Prefix+"view/watch", h.authed(h.watch))
	mux.HandleFunc("GET "+Prefix+"view/hostmap", h.authed(h.hostMap))
	mux.HandleFunc("GET "+Prefix+"view/hosts", h.authed(h.hostPage))
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "no such UI path %s %s", r.Method, r.URL.Path))
	})
	h.mux = mux
	return h, nil
}

// ServeHTTP serves a request under Prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	if strings.HasPrefix(r.URL.Path, Prefix+"static/") || r.URL.Path == Prefix {
		hd.Set("Cache-Control", "no-cache")
	} else {
		hd.Set("Cache-Control", "no-store")
	}
	h.mux.ServeHTTP(w, r)
}
