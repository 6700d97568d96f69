// Package rest is the controller's northbound HTTP API under
// /apis/weft/v1: create, get, list (label selectors, pages), update, delete
// and streamed watch of every kind, plus /healthz, /readyz, /metrics,
// /version and an OpenAPI document at /openapi.json. Every error is a JSON
// apiv1.StatusError with an HTTP status, a reason and field causes.
//
// Every request but /healthz, /readyz, /version and /apis/weft/v1/ca needs
// a credential (a bearer token or a client certificate, see package auth):
// without one it gets 401, and what it may do is decided per request (403;
// lists and watches narrowed to what the credential may see). Every write
// is logged on one line (subsystem "audit"; a dry run's with dryRun true).
// Credentials are managed under /apis/weft/v1/tokens, /enroll and
// /certificates (credentials.go).
//
// Paths:
//
//	/apis/weft/v1/{plural}                            cluster-scoped kinds; list across tenants
//	/apis/weft/v1/{plural}/{name}[/status]            cluster-scoped objects
//	/apis/weft/v1/tenants/{tenant}/{plural}           tenant-scoped kinds
//	/apis/weft/v1/tenants/{tenant}/{plural}/{name}[/status]
//
// Lists and watches take a labelSelector and a fieldSelector
// (apiv1.SelectableFields: "spec.host=h1" for endpoints, served from the
// store's indexes). Lists return at most Config.MaxPage objects (?limit=N
// for fewer) and a metadata.continue token to pass as ?continue= for the
// next page. A watch with a selector sees an object relabelled (or
// changed) out of it as DELETED, with its last matching state, and one
// that comes into it as ADDED, as Kubernetes does.
//
// PATCH of an object takes a JSON merge patch (RFC 7386, Content-Type
// application/merge-patch+json), a JSON patch (RFC 6902,
// application/json-patch+json) or a manifest to apply server-side
// (application/apply-patch+yaml: created if absent, else merged; see
// apiv1.ApplyPatchType). Every write (POST, PUT, PATCH, DELETE) takes
// ?dryRun=All: defaulting, validation, admission and quota run, nothing
// is stored, and the answer is what would be.
//
// A status is replaced with PUT .../status (the whole status) or changed
// with PATCH .../status and a JSON merge patch such as {"status":
// {"phase": "Ready"}}: each of its writers sends only the fields it owns.
package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/auth"
	"github.com/weftnet/weft/controller/store"
)

// Backend is what the API serves: the controller's registry.
type Backend interface {
	Create(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error)
	Update(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error)
	UpdateStatus(ctx context.Context, obj apiv1.Object) (apiv1.Object, error)
	MergePatchStatus(ctx context.Context, ref apiv1.Ref, patch []byte) (apiv1.Object, error)
	Delete(ctx context.Context, ref apiv1.Ref, opts ...apiv1.WriteOption) (apiv1.Object, error)
	Get(ctx context.Context, ref apiv1.Ref) (apiv1.Object, error)
	Select(ctx context.Context, kind, tenant string, labels apiv1.LabelSelector, fields apiv1.FieldSelector) ([]apiv1.Object, int64)
	// ListPage reads a page of a list: the first from the cache, a next
	// one at the list's revision (store.ListHead, store.ListAt).
	ListPage(ctx context.Context, q store.PageQuery) (store.Page, error)
	Watch(ctx context.Context, kind, tenant string, fromRev int64) (<-chan store.Event, error)
}

// Authenticator tells who a request is (package auth): nil without a
// credential, an error for an invalid one.
type Authenticator interface {
	Authenticate(r *http.Request) (*auth.Identity, error)
}

// Config configures the API handler.
type Config struct {
	Backend Backend
	Logger  *slog.Logger
	// Authenticator identifies requests; Lookup is what authorization
	// reads (the store). Both are required unless Insecure.
	Authenticator Authenticator
	Lookup        auth.Lookup
	// Insecure serves requests without a credential as a cluster admin
	// (a plain-HTTP lab or test); credentials that are presented are still
	// checked.
	Insecure bool
	// Tokens, Enroller and CA serve the credential endpoints; each nil one
	// answers 404.
	Tokens   Tokens
	Enroller Enroller
	CA       CA
	// Registerer receives the API metrics; Gatherer serves /metrics. Both may be nil.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// MaxBodyBytes caps request bodies (default 3 MiB); larger ones get 413.
	MaxBodyBytes int64
	// MaxPage caps the objects of one list response (default 5,000).
	MaxPage int
	// MaxWatches caps the watches open at once per credential (default 64);
	// more get 429.
	MaxWatches int
	// WatchWriteTimeout bounds each write of a watch stream (default
	// 10s): a watcher that stops reading is disconnected instead of
	// blocking its handler.
	WatchWriteTimeout time.Duration
	// Ready reports whether the controller can serve (nil = ready).
	Ready func() error
	// Version is reported by /version.
	Version string
	// Flows, if set, answers GET /apis/weft/v1/tenants/{tenant}/flows
	// ?top=N&endpoint=E, the tenant's top talkers (a JSON document; an
	// error wrapping a StatusError keeps its status).
	Flows func(ctx context.Context, tenant, endpoint string, top int) (any, error)
}

// Validate reports a missing setting.
func (c *Config) Validate() error {
	switch {
	case c.Backend == nil:
		return errors.New("rest: Backend is required")
	case c.Authenticator == nil && !c.Insecure:
		return errors.New("rest: an Authenticator is required unless Insecure")
	case c.Authenticator != nil && c.Lookup == nil:
		return errors.New("rest: Lookup is required with an Authenticator")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 3 << 20
	}
	if c.MaxPage == 0 {
		c.MaxPage = 5000
	}
	if c.MaxWatches == 0 {
		c.MaxWatches = 64
	}
	if c.WatchWriteTimeout == 0 {
		c.WatchWriteTimeout = 10 * time.Second
	}
}

type server struct {
	cfg     Config
	log     *slog.Logger
	audit   *slog.Logger
	metrics *metrics
	authz   *auth.Authorizer

	watchMu sync.Mutex
	watches map[string]int // open watches by credential subject
}

// NewHandler returns the API's http.Handler.
func NewHandler(cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &server{cfg: cfg, log: cfg.Logger.With("subsystem", "rest"), audit: cfg.Logger.With("subsystem", "audit"),
		metrics: m, watches: map[string]int{}}
	if cfg.Lookup != nil {
		s.authz = auth.NewAuthorizer(cfg.Lookup)
	}
	mux := http.NewServeMux()
	const base = "/apis/weft/v1/"
	mux.HandleFunc("GET "+base+"{plural}", s.list)
	mux.HandleFunc("POST "+base+"{plural}", s.create)
	mux.HandleFunc("GET "+base+"{plural}/{name}", s.get)
	mux.HandleFunc("PUT "+base+"{plural}/{name}", s.update)
	mux.HandleFunc("PATCH "+base+"{plural}/{name}", s.patch)
	mux.HandleFunc("DELETE "+base+"{plural}/{name}", s.delete)
	mux.HandleFunc("PUT "+base+"{plural}/{name}/status", s.updateStatus)
	mux.HandleFunc("PATCH "+base+"{plural}/{name}/status", s.patchStatus)
	mux.HandleFunc("GET "+base+"tenants/{tenant}/{plural}", s.list)
	mux.HandleFunc("POST "+base+"tenants/{tenant}/{plural}", s.create)
	mux.HandleFunc("GET "+base+"tenants/{tenant}/{plural}/{name}", s.get)
	mux.HandleFunc("PUT "+base+"tenants/{tenant}/{plural}/{name}", s.update)
	mux.HandleFunc("PATCH "+base+"tenants/{tenant}/{plural}/{name}", s.patch)
	mux.HandleFunc("DELETE "+base+"tenants/{tenant}/{plural}/{name}", s.delete)
	mux.HandleFunc("PUT "+base+"tenants/{tenant}/{plural}/{name}/status", s.updateStatus)
	mux.HandleFunc("PATCH "+base+"tenants/{tenant}/{plural}/{name}/status", s.patchStatus)
	s.credentialRoutes(mux, base)

	if cfg.Flows != nil {
		mux.HandleFunc("GET "+base+"tenants/{tenant}/flows", s.flows)
	}
	mux.HandleFunc("/apis/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "no such API path %s %s", r.Method, r.URL.Path))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": cfg.Version, "apiVersion": apiv1.APIVersion})
	})
	spec := openAPI(cfg.Version)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(spec)
	})
	if cfg.Gatherer != nil {
		metrics := promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
			if id := identity(r); id.Role != auth.RoleClusterAdmin {
				WriteError(w, apiv1.NewForbidden("forbidden: /metrics takes a cluster-admin credential"))
				return
			}
			metrics.ServeHTTP(w, r)
		})
	}
	return s.instrument(s.authenticate(mux)), nil
}

func (s *server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			WriteError(w, apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, "not ready: %v", err))
			return
		}
	}
	_, _ = io.WriteString(w, "ok\n")
}

// target resolves the kind, tenant and name a request addresses.
func target(r *http.Request) (apiv1.KindInfo, apiv1.Ref, error) {
	plural := r.PathValue("plural")
	ki, ok := apiv1.LookupKind(plural)
	if !ok || ki.Plural != plural {
		return ki, apiv1.Ref{}, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "unknown resource %q (known: %s)", plural, knownPlurals())
	}
	tenant := r.PathValue("tenant")
	ref := apiv1.Ref{Kind: ki.Kind, Tenant: tenant, Name: r.PathValue("name")}
	if tenant != "" && !ki.Namespaced {
		return ki, ref, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "%s are cluster-scoped: use /apis/weft/v1/%s", ki.Plural, ki.Plural)
	}
	if tenant == "" && ki.Namespaced && ref.Name != "" {
		return ki, ref, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "%s are tenant-scoped: use /apis/weft/v1/tenants/{tenant}/%s/%s", ki.Plural, ki.Plural, ref.Name)
	}
	setAudit(r, ref.String())
	return ki, ref, nil
}

func knownPlurals() string {
	var p []string
	for _, k := range apiv1.Kinds() {
		p = append(p, k.Plural)
	}
	return strings.Join(p, ", ")
}

// authorize decides a request on one object for the request's identity.
// For credentials below cluster-admin it reads the stored object first
// when the decision depends on it (old is then that object, or nil).
func (s *server) authorize(r *http.Request, verb string, ref apiv1.Ref, obj apiv1.Object) (old apiv1.Object, err error) {
	id := identity(r)
	if id.Role == auth.RoleClusterAdmin {
		return nil, nil
	}
	req := auth.Request{Verb: verb, Kind: ref.Kind, Tenant: ref.Tenant, Name: ref.Name, Obj: obj}
	if auth.NeedsOld(id, verb) {
		// The tenant is checked first, so that nothing is read of a tenant
		// the credential may not see.
		if err := s.authz.Authorize(id, auth.Request{Verb: verb, Kind: ref.Kind, Tenant: ref.Tenant, Name: ref.Name}); err != nil && !apiv1.IsNotFound(err) {
			return nil, err
		}
		if o, err := s.cfg.Backend.Get(r.Context(), ref); err == nil {
			req.Old, old = o, o
		}
	}
	return old, s.authz.Authorize(id, req)
}

// readBody reads a request body of at most MaxBodyBytes.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, apiv1.NewStatus(http.StatusRequestEntityTooLarge, apiv1.ReasonTooLarge, "request body larger than %d bytes", mbe.Limit)
		}
		return nil, apiv1.NewBadRequest("read request body: %v", err)
	}
	return body, nil
}

// readObject decodes a request body (JSON or YAML, one object, strict) and
// checks it against the path.
func (s *server) readObject(w http.ResponseWriter, r *http.Request, ki apiv1.KindInfo, ref apiv1.Ref) (apiv1.Object, error) {
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	return decodeChecked(body, ki, ref)
}

// checkObject checks a decoded request object against the path, and
// gives a tenant-scoped one without a tenant the path's.
func checkObject(obj apiv1.Object, ki apiv1.KindInfo, ref apiv1.Ref) error {
	tm := obj.GetTypeMeta()
	if tm.Kind != ki.Kind {
		return apiv1.NewBadRequest("body has kind %q but the path is for %s", tm.Kind, ki.Kind)
	}
	m := obj.GetObjectMeta()
	if ki.Namespaced {
		if m.Tenant == "" {
			m.Tenant = ref.Tenant
		}
		if m.Tenant != ref.Tenant {
			return apiv1.NewBadRequest("metadata.tenant %q does not match the path's tenant %q", m.Tenant, ref.Tenant)
		}
	}
	if ref.Name != "" && m.Name != ref.Name {
		return apiv1.NewBadRequest("metadata.name %q does not match the path's name %q", m.Name, ref.Name)
	}
	return nil
}

// writeOptions reads the query of a write: dryRun=All makes it a dry run.
func writeOptions(r *http.Request) ([]apiv1.WriteOption, error) {
	switch v := r.URL.Query()["dryRun"]; {
	case len(v) == 0:
		return nil, nil
	case len(v) == 1 && v[0] == "All":
		return []apiv1.WriteOption{apiv1.WithDryRun()}, nil
	default:
		return nil, apiv1.NewBadRequest("dryRun %q: the only dry run is All", strings.Join(v, ","))
	}
}

func (s *server) create(w http.ResponseWriter, r *http.Request) {
	ki, ref, err := target(r)
	if err == nil && ki.Namespaced && ref.Tenant == "" {
		err = apiv1.NewStatus(http.StatusMethodNotAllowed, apiv1.ReasonMethodNotAllowed, "%s are tenant-scoped: POST to /apis/weft/v1/tenants/{tenant}/%s", ki.Plural, ki.Plural)
	}
	if err == nil {
		_, err = s.authorize(r, auth.VerbCreate, ref, nil) // the scope, before the body
	}
	var opts []apiv1.WriteOption
	if err == nil {
		opts, err = writeOptions(r)
	}
	var obj apiv1.Object
	if err == nil {
		obj, err = s.readObject(w, r, ki, ref)
	}
	if err == nil {
		ref.Name = obj.GetObjectMeta().Name
		setAudit(r, ref.String())
		_, err = s.authorize(r, auth.VerbCreate, ref, obj) // and the fields
	}
	if err != nil {
		WriteError(w, err)
		return
	}
	out, err := s.cfg.Backend.Create(r.Context(), obj, opts...)
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	_, ref, err := target(r)
	if err != nil {
		WriteError(w, err)
		return
	}
	if _, err := s.authorize(r, auth.VerbGet, ref, nil); err != nil {
		WriteError(w, err)
		return
	}
	out, err := s.cfg.Backend.Get(r.Context(), ref)
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) update(w http.ResponseWriter, r *http.Request) {
	s.put(w, r, auth.VerbUpdate, s.cfg.Backend.Update)
}

func (s *server) updateStatus(w http.ResponseWriter, r *http.Request) {
	s.put(w, r, auth.VerbStatus, func(ctx context.Context, obj apiv1.Object, _ ...apiv1.WriteOption) (apiv1.Object, error) {
		return s.cfg.Backend.UpdateStatus(ctx, obj)
	})
}

func (s *server) put(w http.ResponseWriter, r *http.Request, verb string, do func(context.Context, apiv1.Object, ...apiv1.WriteOption) (apiv1.Object, error)) {
	ki, ref, err := target(r)
	if err == nil {
		_, err = s.authorize(r, verb, ref, nil) // the scope and the stored object, before the body
	}
	var opts []apiv1.WriteOption
	if err == nil {
		opts, err = s.writeOptions(r, verb)
	}
	var body []byte
	if err == nil {
		body, err = s.readBody(w, r)
	}
	var out apiv1.Object
	if err == nil {
		if verb == auth.VerbUpdate {
			out, err = s.updateAuthorized(r, ki, ref, body, opts)
		} else {
			var obj apiv1.Object
			if obj, err = decodeChecked(body, ki, ref); err == nil {
				out, err = do(r.Context(), obj, opts...)
			}
		}
	}
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// decodeChecked decodes a request object (JSON or YAML, one object,
// strict) and checks it against the path.
func decodeChecked(body []byte, ki apiv1.KindInfo, ref apiv1.Ref) (apiv1.Object, error) {
	obj, err := apiv1.DecodeObject(body)
	if err != nil {
		return nil, err
	}
	return obj, checkObject(obj, ki, ref)
}

// updateAuthorized authorizes and makes an update (PUT). A decision that read the
// stored object holds only for that object, so the update is sent on the
// condition that the object is still the one read (its resourceVersion).
// When the request itself carries no resourceVersion (last write wins),
// that condition is the server's, not the client's: if another writer
// changed the object in between (an agent's status write, say), the
// object is read and authorized again and the update made again, instead
// of answering 409 to a request that asked for no precondition.
func (s *server) updateAuthorized(r *http.Request, ki apiv1.KindInfo, ref apiv1.Ref, body []byte, opts []apiv1.WriteOption) (apiv1.Object, error) {
	var lastErr error
	lastRV := ""
	for range patchAttempts {
		// Decoded afresh: the backend defaults the object it is given.
		obj, err := decodeChecked(body, ki, ref)
		if err != nil {
			return nil, err
		}
		old, err := s.authorize(r, auth.VerbUpdate, ref, obj)
		if err != nil {
			return nil, err
		}
		m := obj.GetObjectMeta()
		if old == nil || m.ResourceVersion != "" {
			// No decision on the stored object, or the client's own
			// precondition: the backend's answer is the answer.
			return s.cfg.Backend.Update(r.Context(), obj, opts...)
		}
		rv := old.GetObjectMeta().ResourceVersion
		if lastErr != nil && rv == lastRV {
			break // not a lost race: the object did not change
		}
		m.ResourceVersion = rv
		out, err := s.cfg.Backend.Update(r.Context(), obj, opts...)
		if err == nil || !apiv1.IsConflict(err) {
			return out, err
		}
		lastErr, lastRV = err, rv
	}
	return nil, lastErr
}

// writeOptions is writeOptions for a write of verb: a status write takes
// no dry run.
func (s *server) writeOptions(r *http.Request, verb string) ([]apiv1.WriteOption, error) {
	opts, err := writeOptions(r)
	if err == nil && opts != nil && verb == auth.VerbStatus {
		err = apiv1.NewBadRequest("dryRun: a status write cannot be a dry run")
	}
	return opts, err
}

// patchType returns the media type of a PATCH body.
func patchType(r *http.Request) string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

// patchAttempts bounds how often a PATCH is applied again to an object
// that another writer changed meanwhile.
const patchAttempts = 5

// patch applies a merge patch, a JSON patch or a server-side apply to an
// object: to the stored object, then written as an update conditioned on
// the resourceVersion it was read at, again if another writer got in
// between. Each attempt is authorized as an update of the object it
// would write (an apply of an absent object as its create).
func (s *server) patch(w http.ResponseWriter, r *http.Request) {
	ki, ref, err := target(r)
	if err == nil {
		_, err = s.authorize(r, auth.VerbUpdate, ref, nil) // the scope, before the body
	}
	var opts []apiv1.WriteOption
	if err == nil {
		opts, err = writeOptions(r)
	}
	var body []byte
	if err == nil {
		body, err = s.readBody(w, r)
	}
	typ := patchType(r)
	if err == nil && typ == apiv1.ApplyPatchType {
		var obj apiv1.Object
		if obj, err = apiv1.DecodeObject(body); err == nil {
			err = checkObject(obj, ki, ref)
		}
	}
	if err != nil {
		WriteError(w, err)
		return
	}
	ctx := r.Context()
	var lastErr error
	lastRV := ""
	for range patchAttempts {
		cur, err := s.cfg.Backend.Get(ctx, ref)
		if apiv1.IsNotFound(err) && typ == apiv1.ApplyPatchType {
			s.applyCreate(w, r, ki, ref, body, opts)
			return
		}
		if err != nil {
			WriteError(w, err)
			return
		}
		rv := cur.GetObjectMeta().ResourceVersion
		if lastErr != nil && rv == lastRV {
			break // not a lost race: the object did not change
		}
		next, err := apiv1.PatchObject(cur, typ, body)
		if err == nil {
			_, err = s.authorize(r, auth.VerbUpdate, ref, next)
		}
		if err != nil {
			WriteError(w, err)
			return
		}
		m := next.GetObjectMeta()
		precondition := m.ResourceVersion != rv // the patch set one
		if !precondition {
			m.ResourceVersion = rv
		}
		out, err := s.cfg.Backend.Update(ctx, next, opts...)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, out)
			return
		case !apiv1.IsConflict(err) && !apiv1.IsNotFound(err) || precondition:
			WriteError(w, err)
			return
		}
		lastErr, lastRV = err, rv
	}
	WriteError(w, lastErr)
}

// applyCreate creates the object of a server-side apply that finds none.
func (s *server) applyCreate(w http.ResponseWriter, r *http.Request, ki apiv1.KindInfo, ref apiv1.Ref, body []byte, opts []apiv1.WriteOption) {
	obj, err := apiv1.DecodeObject(body)
	if err == nil {
		err = checkObject(obj, ki, ref)
	}
	if err == nil {
		_, err = s.authorize(r, auth.VerbCreate, ref, obj)
	}
	var out apiv1.Object
	if err == nil {
		out, err = s.cfg.Backend.Create(r.Context(), obj, opts...)
	}
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

// patchStatus applies a JSON merge patch to an object's status.
func (s *server) patchStatus(w http.ResponseWriter, r *http.Request) {
	_, ref, err := target(r)
	if err == nil {
		_, err = s.authorize(r, auth.VerbStatus, ref, nil)
	}
	if err == nil {
		_, err = s.writeOptions(r, auth.VerbStatus)
	}
	if err != nil {
		WriteError(w, err)
		return
	}
	if typ := patchType(r); typ != apiv1.MergePatchType {
		WriteError(w, apiv1.NewStatus(http.StatusUnsupportedMediaType, apiv1.ReasonUnsupportedMedia,
			"Content-Type %q: PATCH of a status takes a JSON merge patch (RFC 7386), %s", r.Header.Get("Content-Type"), apiv1.MergePatchType))
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		WriteError(w, err)
		return
	}
	out, err := s.cfg.Backend.MergePatchStatus(r.Context(), ref, body)
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) delete(w http.ResponseWriter, r *http.Request) {
	_, ref, err := target(r)
	if err == nil {
		_, err = s.authorize(r, auth.VerbDelete, ref, nil)
	}
	var opts []apiv1.WriteOption
	if err == nil {
		opts, err = writeOptions(r)
	}
	if err != nil {
		WriteError(w, err)
		return
	}
	out, err := s.cfg.Backend.Delete(r.Context(), ref, opts...)
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// listObject is the body of a list response.
type listObject struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   listMeta       `json:"metadata"`
	Items      []apiv1.Object `json:"items"`
}

type listMeta struct {
	ResourceVersion string `json:"resourceVersion"`
	// Continue, if set, asks for the next page (?continue=).
	Continue string `json:"continue,omitempty"`
}

func (s *server) list(w http.ResponseWriter, r *http.Request) {
	ki, ref, err := target(r)
	if err != nil {
		WriteError(w, err)
		return
	}
	lq, err := parseListQuery(r.URL.Query(), ki.Kind, s.cfg.MaxPage)
	if err != nil {
		WriteError(w, err)
		return
	}
	verb := auth.VerbList
	if lq.watch {
		verb = auth.VerbWatch
	}
	tenant, keep := ref.Tenant, func(apiv1.Object) bool { return true }
	filtered := false // a credential's filter may refuse objects
	if id := identity(r); id.Role != auth.RoleClusterAdmin {
		if err := s.authz.Authorize(id, auth.Request{Verb: verb, Kind: ki.Kind, Tenant: ref.Tenant}); err != nil {
			WriteError(w, err)
			return
		}
		var k func(apiv1.Object) bool
		if tenant, k = s.authz.Filter(id, ki.Kind, ref.Tenant); k != nil {
			keep, filtered = k, true
		}
	}
	if lq.watch {
		s.watch(w, r, ki, tenant, lq, keep)
		return
	}
	var (
		page []apiv1.Object
		next string
		rev  int64
	)
	if c := lq.cont; c != nil || len(lq.fields) == 0 && lq.sel.Empty() && !filtered {
		// A page read from where the last one ended (a next page: at the
		// list's revision), up to the limit, not the whole kind. A first
		// page with a selector or a credential's filter is Select's: in
		// the cache, with its indexes; read on from etcd, a selector that
		// matches few objects would decode the whole kind (the web UI's
		// probe of 100,000 hosts took 13 s).
		q := store.PageQuery{Kind: ki.Kind, Tenant: tenant, Limit: lq.limit, Keep: func(o apiv1.Object) bool {
			return keep(o) && lq.sel.Matches(o.GetObjectMeta().Labels) && lq.fields.Matches(o)
		}}
		if c != nil {
			q.Rev, q.AfterTenant, q.AfterName = c.Rev, c.Tenant, c.Name
		}
		p, err := s.cfg.Backend.ListPage(r.Context(), q)
		if err != nil {
			WriteError(w, listPageError(err, q.Rev))
			return
		}
		page, rev = p.Objects, p.Rev
		if p.More {
			next = lq.token(rev, page[len(page)-1])
		}
	} else {
		var items []apiv1.Object
		items, rev = s.cfg.Backend.Select(r.Context(), ki.Kind, tenant, lq.sel, lq.fields)
		page, next = lq.page(items, rev, keep)
	}
	if page == nil {
		page = []apiv1.Object{}
	}
	writeJSON(w, http.StatusOK, listObject{
		APIVersion: apiv1.APIVersion, Kind: "List",
		Metadata: listMeta{ResourceVersion: strconv.FormatInt(rev, 10), Continue: next}, Items: page,
	})
}

// listPageError is the answer to a failed read of a next page: 410 Gone
// when the list's revision was compacted (Kubernetes: the continue token
// expired), else 503.
func listPageError(err error, rev int64) error {
	if errors.Is(err, store.ErrCompacted) {
		return apiv1.NewStatus(http.StatusGone, apiv1.ReasonGone,
			"continue token expired: the list's resourceVersion %d is compacted; list again without continue", rev)
	}
	return apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, "list the next page: %v", err)
}

// credentialRecheck is how often a watch checks that its credential is
// still valid.
const credentialRecheck = 500 * time.Millisecond

// KindFlow names flow records in authorization requests: they are not
// objects, and a credential reads them as it lists its tenant's objects.
const KindFlow = "Flow"

// flows answers a top-talkers query (Config.Flows).
func (s *server) flows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	top := 10
	if v := q.Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			WriteError(w, apiv1.NewBadRequest("top %q: want a number from 1 to 1000", v))
			return
		}
		top = n
	}
	tenant := r.PathValue("tenant")
	if id := identity(r); id.Role != auth.RoleClusterAdmin {
		// Flows are read like the tenant's objects: its own credentials
		// (admin or viewer) and cluster admins, never another tenant's
		// or an agent's.
		if err := s.authz.Authorize(id, auth.Request{Verb: auth.VerbList, Kind: KindFlow, Tenant: tenant}); err != nil {
			WriteError(w, err)
			return
		}
	}
	out, err := s.cfg.Flows(r.Context(), tenant, q.Get("endpoint"), top)
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// watchEvent is one line of a watch stream.
type watchEvent struct {
	Type   string `json:"type"`
	Object any    `json:"object"`
}

// watch streams newline-delimited JSON events of the objects keep and the
// selectors admit. Without a resourceVersion it starts with an ADDED event
// for every current object. An object that stops being admitted (an
// endpoint moved off an agent's host, or relabelled out of the selector)
// ends with a DELETED event, one that starts to be begins with ADDED
// (store.Event.Filter).
func (s *server) watch(w http.ResponseWriter, r *http.Request, ki apiv1.KindInfo, tenant string, lq listQuery, keep func(apiv1.Object) bool) {
	ctx := r.Context()
	release, err := s.openWatch(identity(r))
	if err != nil {
		WriteError(w, err)
		return
	}
	defer release()
	from := lq.rv
	var initial []apiv1.Object
	if from == 0 {
		initial, from = s.cfg.Backend.Select(ctx, ki.Kind, tenant, lq.sel, lq.fields)
	}
	ch, err := s.cfg.Backend.Watch(ctx, ki.Kind, tenant, from)
	if err != nil {
		if errors.Is(err, store.ErrCompacted) {
			WriteError(w, apiv1.NewStatus(http.StatusGone, apiv1.ReasonGone, "resourceVersion %d is too old (compacted): list again and watch from the list's resourceVersion", from))
			return
		}
		WriteError(w, apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, "watch: %v", err))
		return
	}
	rc := http.NewResponseController(w)
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }() // for the connection's next request
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(ev watchEvent) bool {
		// A watcher that stops reading fails the write at the deadline
		// and ends the watch.
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WatchWriteTimeout))
		return enc.Encode(ev) == nil && rc.Flush() == nil
	}
	match := func(o apiv1.Object) bool {
		return keep(o) && lq.sel.Matches(o.GetObjectMeta().Labels) && lq.fields.Matches(o)
	}
	for _, o := range initial {
		if keep(o) && !send(watchEvent{Type: store.EventAdded, Object: o}) {
			return
		}
	}
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WatchWriteTimeout))
	if rc.Flush() != nil {
		return
	}
	// A credential revoked (or an agent's Host deleted) meanwhile ends
	// the watch.
	recheck := time.NewTicker(credentialRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-recheck.C:
			if s.cfg.Authenticator == nil {
				continue
			}
			if _, err := s.cfg.Authenticator.Authenticate(r); err != nil {
				send(watchEvent{Type: "ERROR", Object: apiv1.NewUnauthorized("%v", err)})
				return
			}
		case ev, ok := <-ch:
			if !ok {
				if ctx.Err() == nil {
					send(watchEvent{Type: "ERROR", Object: apiv1.NewStatus(http.StatusGone, apiv1.ReasonGone, "watch closed by the server (too slow or restarting): list again and re-watch")})
				}
				return
			}
			ev, ok = ev.Filter(match)
			if ok && !send(watchEvent{Type: ev.Type, Object: ev.Object}) {
				return
			}
		}
	}
}

// openWatch counts a watch of id against MaxWatches; release uncounts it.
func (s *server) openWatch(id *auth.Identity) (release func(), err error) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watches[id.Subject] >= s.cfg.MaxWatches {
		return nil, apiv1.NewStatus(http.StatusTooManyRequests, apiv1.ReasonTooManyRequests,
			"this credential has %d watches open, the most allowed: close one first", s.cfg.MaxWatches)
	}
	s.watches[id.Subject]++
	return func() {
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		if s.watches[id.Subject]--; s.watches[id.Subject] == 0 {
			delete(s.watches, id.Subject)
		}
	}, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(w, apiv1.NewStatus(http.StatusInternalServerError, apiv1.ReasonInternal, "encode response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// WriteError answers with a StatusError, as every path of the API does
// (the handlers mounted beside it too); other errors become 500s.
func WriteError(w http.ResponseWriter, err error) {
	var se *apiv1.StatusError
	if !errors.As(err, &se) {
		se = apiv1.NewStatus(http.StatusInternalServerError, apiv1.ReasonInternal, "%v", err)
	}
	b, _ := json.Marshal(se)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(se.Code)
	_, _ = w.Write(append(b, '\n'))
}

// ---- metrics ----

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inflight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_api_requests_total", Help: "API requests by method, resource and HTTP status code.",
		}, []string{"method", "resource", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weft_api_request_seconds", Help: "API request latency (watches excluded).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"method", "resource"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_api_requests_in_flight", Help: "API requests being served, watches included.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.latency, m.inflight} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("rest: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instrument counts and times requests, and logs one audit line per
// write (a request other than GET/HEAD that got past authentication); the
// line of a dry run says so (dryRun true), as it changed nothing.
func (s *server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		c := &call{}
		r = r.WithContext(context.WithValue(r.Context(), callKey{}, c))
		s.metrics.inflight.Inc()
		next.ServeHTTP(rec, r)
		s.metrics.inflight.Dec()
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		res := resourceOf(r.URL.Path)
		s.metrics.requests.WithLabelValues(r.Method, res, strconv.Itoa(rec.code)).Inc()
		if r.URL.Query().Get("watch") == "" {
			s.metrics.latency.WithLabelValues(r.Method, res).Observe(time.Since(start).Seconds())
		}
		if rec.code >= 500 {
			s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "code", rec.code)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			id, obj := c.id, c.object
			if id == nil {
				id = &auth.Identity{Subject: "unauthenticated"}
			}
			if obj == "" {
				obj = r.URL.Path
			}
			attrs := []any{"subject", id.Subject, "role", id.Role, "tenant", id.Tenant, "host", id.Host,
				"verb", verbOf(r), "object", obj, "code", rec.code}
			if r.URL.Query().Has("dryRun") {
				attrs = append(attrs, "dryRun", true) // changed nothing
			}
			s.audit.Info("write", attrs...)
		}
	})
}

// verbOf names a write for the audit log.
func verbOf(r *http.Request) string {
	switch {
	case strings.HasSuffix(r.URL.Path, "/status"):
		return auth.VerbStatus
	case r.Method == http.MethodPost:
		return auth.VerbCreate
	case r.Method == http.MethodPut:
		return auth.VerbUpdate
	case r.Method == http.MethodDelete:
		return auth.VerbDelete
	}
	return strings.ToLower(r.Method)
}

// resourceOf returns the plural a path addresses, or the path for other
// endpoints, keeping metric label cardinality bounded.
func resourceOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/apis/weft/v1/")
	if !ok {
		switch path {
		case "/healthz", "/readyz", "/metrics", "/version", "/openapi.json":
			return path
		}
		return "other"
	}
	parts := strings.Split(rest, "/")
	if len(parts) >= 3 && parts[0] == "tenants" {
		parts = parts[2:]
	}
	if parts[0] == "flows" {
		return "flows"
	}
	if ki, ok := apiv1.LookupKind(parts[0]); ok {
		return ki.Plural
	}
	switch parts[0] {
	case "tokens", "enroll", "certificates", "ca":
		return parts[0]
	}
	return "unknown"
}
