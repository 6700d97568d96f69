package fakeapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"sigs.k8s.io/yaml"
)

const prefix = "/apis/weft/v1/"

// Server is the fake controller. Its zero value is not usable; call New.
type Server struct {
	now func() time.Time

	mu        sync.Mutex
	rev       int64
	uidSeq    int
	vniSeq    uint32
	objs      map[key]apiv1.Object
	log       []event // every change since the start, oldest first
	compacted int64   // watches from a revision below this get 410 Gone
	changed   chan struct{}
	requests  []string
	hook      func(r *http.Request)
	closed    chan struct{}
	closeOnce sync.Once
}

type key struct{ kind, tenant, name string }

// event is one entry of the change log watches read.
type event struct {
	rev    int64
	typ    string // ADDED, MODIFIED, DELETED, or ERROR (sent to every watch)
	kind   string
	tenant string
	labels map[string]string
	data   []byte // JSON of the object, or of the StatusError for ERROR
}

// Option configures a Server.
type Option func(*Server)

// WithClock makes the server stamp creationTimestamp from now.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// New returns an empty fake server.
func New(opts ...Option) *Server {
	s := &Server{
		now:     time.Now,
		vniSeq:  100,
		objs:    map[key]apiv1.Object{},
		changed: make(chan struct{}),
		closed:  make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Serve starts s (New(opts...)) on an httptest server on loopback and
// returns it with its URL; both are closed when the test ends.
func Serve(tb testing.TB, opts ...Option) (*Server, string) {
	tb.Helper()
	s := New(opts...)
	ts := httptest.NewServer(s)
	tb.Cleanup(func() {
		s.Close() // ends watches, so that ts.Close does not wait for them
		ts.Close()
	})
	return s, ts.URL
}

// Close ends every watch stream; later watches end at once. Idempotent.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closed) }) }

// OnRequest installs a function called at the start of every request,
// before the server looks at it (nil removes it). Tests use it to race a
// request, e.g. by calling Put.
func (s *Server) OnRequest(f func(r *http.Request)) {
	s.mu.Lock()
	s.hook = f
	s.mu.Unlock()
}

// Requests returns "METHOD /path?query" of every request served so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Writes returns the requests that could change state (POST, PUT, DELETE).
func (s *Server) Writes() []string {
	var out []string
	for _, r := range s.Requests() {
		if !strings.HasPrefix(r, "GET ") {
			out = append(out, r)
		}
	}
	return out
}

// Revision returns the current revision (the resourceVersion of a list).
func (s *Server) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// Compact makes every revision up to the current one unavailable to
// watches, like an etcd compaction.
func (s *Server) Compact() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compacted = s.rev
}

// BreakWatches sends se as an ERROR event to every open watch (and every
// watch that replays past this point).
func (s *Server) BreakWatches(se *apiv1.StatusError) {
	data, _ := json.Marshal(se)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appendLocked(event{rev: s.rev, typ: "ERROR", data: data})
}

// Get returns a copy of a stored object.
func (s *Server) Get(kind, tenant, name string) (apiv1.Object, bool) {
	k, ok := apiv1.LookupKind(kind)
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objs[key{k.Kind, scope(k, tenant), name}]
	if !ok {
		return nil, false
	}
	return mustClone(o), true
}

// Objects returns copies of all stored objects in dependency order, then by
// tenant and name.
func (s *Server) Objects() []apiv1.Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []apiv1.Object
	for _, k := range apiv1.Kinds() {
		out = append(out, s.listLocked(k, "", nil)...)
	}
	return out
}

// Put stores obj directly, bypassing validation (creating it or replacing
// it, keeping the stored status), as a concurrent writer would. It returns
// the stored copy.
func (s *Server) Put(obj apiv1.Object) apiv1.Object {
	k := apiv1.MustKind(obj.GetTypeMeta().Kind)
	s.mu.Lock()
	defer s.mu.Unlock()
	o := mustClone(obj)
	apiv1.Default(o)
	kk := keyOf(k, o)
	if old, ok := s.objs[kk]; ok {
		return mustClone(s.replaceLocked(k, old, o))
	}
	s.fillStatusLocked(k, o)
	return mustClone(s.createLocked(k, o))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		hook(r)
	}
	switch r.URL.Path {
	case "/healthz", "/readyz":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
		return
	case "/version":
		writeJSON(w, http.StatusOK, map[string]string{"version": "fakeapi"})
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		writeError(w, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "no such path %s", r.URL.Path))
		return
	}
	seg := strings.Split(strings.Trim(rest, "/"), "/")
	var (
		k            apiv1.KindInfo
		tenant, name string
		found        bool
	)
	switch {
	case len(seg) <= 2:
		k, found = byPlural(seg[0])
		found = found && (len(seg) == 1 || !k.Namespaced)
		if len(seg) == 2 {
			name = seg[1]
		}
	case len(seg) <= 4 && seg[0] == "tenants":
		tenant = seg[1]
		k, found = byPlural(seg[2])
		found = found && k.Namespaced && tenant != ""
		if len(seg) == 4 {
			name = seg[3]
		}
	}
	if !found || (len(seg) == 2 || len(seg) == 4) && name == "" {
		writeError(w, apiv1.NewStatus(http.StatusNotFound, apiv1.ReasonNotFound, "no such path %s", r.URL.Path))
		return
	}
	if name == "" {
		switch r.Method {
		case http.MethodGet:
			if r.URL.Query().Get("watch") == "true" {
				s.watch(w, r, k, tenant)
			} else {
				s.list(w, r, k, tenant)
			}
		case http.MethodPost:
			if k.Namespaced && tenant == "" {
				writeError(w, apiv1.NewStatus(http.StatusMethodNotAllowed, apiv1.ReasonMethodNotAllowed,
					"create %s under /apis/weft/v1/tenants/{tenant}/%s", k.Plural, k.Plural))
				return
			}
			s.create(w, r, k, tenant)
		default:
			writeError(w, apiv1.NewStatus(http.StatusMethodNotAllowed, apiv1.ReasonMethodNotAllowed, "%s not allowed on %s", r.Method, r.URL.Path))
		}
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.get(w, k, tenant, name)
	case http.MethodPut:
		s.update(w, r, k, tenant, name)
	case http.MethodDelete:
		s.delete(w, k, tenant, name)
	default:
		writeError(w, apiv1.NewStatus(http.StatusMethodNotAllowed, apiv1.ReasonMethodNotAllowed, "%s not allowed on %s", r.Method, r.URL.Path))
	}
}

// ---- handlers ----

func (s *Server) get(w http.ResponseWriter, k apiv1.KindInfo, tenant, name string) {
	s.mu.Lock()
	o, ok := s.objs[key{k.Kind, tenant, name}]
	var data []byte
	if ok {
		data = mustJSON(o)
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, apiv1.NewNotFound(apiv1.Ref{Kind: k.Kind, Tenant: tenant, Name: name}))
		return
	}
	writeRaw(w, http.StatusOK, data)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, k apiv1.KindInfo, tenant string) {
	sel, se := selectorOf(r)
	if se != nil {
		writeError(w, se)
		return
	}
	s.mu.Lock()
	items := s.listLocked(k, tenant, sel)
	rev := s.rev
	s.mu.Unlock()
	if items == nil {
		items = []apiv1.Object{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"apiVersion": apiv1.APIVersion,
		"kind":       "List",
		"metadata":   map[string]string{"resourceVersion": strconv.FormatInt(rev, 10)},
		"items":      items,
	})
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, k apiv1.KindInfo, tenant string) {
	o, se := decodeBody(r, k, tenant, "")
	if se != nil {
		writeError(w, se)
		return
	}
	apiv1.Default(o)
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := refOf(k, o)
	if _, ok := s.objs[keyOf(k, o)]; ok {
		writeError(w, apiv1.NewAlreadyExists(ref))
		return
	}
	if se := s.validateLocked(o, nil); se != nil {
		writeError(w, se)
		return
	}
	if se := s.fillStatusLocked(k, o); se != nil {
		writeError(w, se)
		return
	}
	writeRaw(w, http.StatusCreated, mustJSON(s.createLocked(k, o)))
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, k apiv1.KindInfo, tenant, name string) {
	o, se := decodeBody(r, k, tenant, name)
	if se != nil {
		writeError(w, se)
		return
	}
	apiv1.Default(o)
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := refOf(k, o)
	old, ok := s.objs[keyOf(k, o)]
	if !ok {
		writeError(w, apiv1.NewNotFound(ref))
		return
	}
	if rv := o.GetObjectMeta().ResourceVersion; rv != "" && rv != old.GetObjectMeta().ResourceVersion {
		writeError(w, apiv1.NewConflict("%s was modified (resourceVersion %s, not %s): get it again and retry",
			ref, old.GetObjectMeta().ResourceVersion, rv))
		return
	}
	if se := s.validateLocked(o, old); se != nil {
		writeError(w, se)
		return
	}
	writeRaw(w, http.StatusOK, mustJSON(s.replaceLocked(k, old, o)))
}

func (s *Server) delete(w http.ResponseWriter, k apiv1.KindInfo, tenant, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := apiv1.Ref{Kind: k.Kind, Tenant: tenant, Name: name}
	kk := key{k.Kind, tenant, name}
	o, ok := s.objs[kk]
	if !ok {
		writeError(w, apiv1.NewNotFound(ref))
		return
	}
	if deps := s.dependentsLocked(k, o); len(deps) > 0 {
		se := apiv1.NewConflict("cannot delete %s: %d object(s) depend on it", ref, len(deps))
		se.Dependents = deps
		writeError(w, se)
		return
	}
	delete(s.objs, kk)
	s.rev++
	s.appendLocked(eventOf(s.rev, "DELETED", k, o))
	writeRaw(w, http.StatusOK, mustJSON(o))
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request, k apiv1.KindInfo, tenant string) {
	sel, se := selectorOf(r)
	if se != nil {
		writeError(w, se)
		return
	}
	s.mu.Lock()
	next := len(s.log)
	var initial []event
	if rvs := r.URL.Query().Get("resourceVersion"); rvs != "" {
		rv, err := strconv.ParseInt(rvs, 10, 64)
		switch {
		case err != nil || rv < 0:
			s.mu.Unlock()
			writeError(w, apiv1.NewBadRequest("resourceVersion %q is not a revision", rvs))
			return
		case rv < s.compacted:
			s.mu.Unlock()
			writeError(w, apiv1.NewStatus(http.StatusGone, apiv1.ReasonGone,
				"resourceVersion %d is compacted (oldest available %d): list again", rv, s.compacted))
			return
		}
		next = sort.Search(len(s.log), func(i int) bool { return s.log[i].rev > rv })
	} else {
		for _, o := range s.listLocked(k, tenant, nil) {
			initial = append(initial, eventOf(s.rev, "ADDED", k, o))
		}
	}
	s.mu.Unlock()

	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	send := func(evs []event) bool {
		for _, ev := range evs {
			if !watchMatches(ev, k, tenant, sel) {
				continue
			}
			line := fmt.Sprintf(`{"type":%q,"object":%s}`+"\n", ev.typ, ev.data)
			if _, err := io.WriteString(w, line); err != nil {
				return false
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if !send(initial) {
		return
	}
	for {
		s.mu.Lock()
		evs := slices.Clone(s.log[next:])
		next = len(s.log)
		changed := s.changed
		s.mu.Unlock()
		if !send(evs) {
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		}
	}
}

// ---- store ----

func (s *Server) createLocked(k apiv1.KindInfo, o apiv1.Object) apiv1.Object {
	s.rev++
	s.uidSeq++
	m := o.GetObjectMeta()
	m.UID = fmt.Sprintf("00000000-0000-4000-8000-%012d", s.uidSeq)
	m.ResourceVersion = strconv.FormatInt(s.rev, 10)
	m.Generation = 1
	m.CreationTimestamp = s.now().UTC().Format(time.RFC3339)
	s.objs[keyOf(k, o)] = o
	s.appendLocked(eventOf(s.rev, "ADDED", k, o))
	return o
}

// replaceLocked stores o in place of old, keeping old's identity and status.
func (s *Server) replaceLocked(k apiv1.KindInfo, old, o apiv1.Object) apiv1.Object {
	s.rev++
	om, m := old.GetObjectMeta(), o.GetObjectMeta()
	m.UID, m.CreationTimestamp, m.Generation = om.UID, om.CreationTimestamp, om.Generation
	if !jsonEqual(specAndLabels(old), specAndLabels(o)) {
		m.Generation++
	}
	m.ResourceVersion = strconv.FormatInt(s.rev, 10)
	copyStatus(old, o)
	if ep, ok := o.(*apiv1.Endpoint); ok {
		ep.Status.Host = ep.Spec.Host // a migration
	}
	s.objs[keyOf(k, o)] = o
	s.appendLocked(eventOf(s.rev, "MODIFIED", k, o))
	return o
}

func (s *Server) appendLocked(ev event) {
	s.log = append(s.log, ev)
	close(s.changed)
	s.changed = make(chan struct{})
}

// listLocked returns copies of the objects of kind k (in tenant, if not
// "") matching sel, sorted by tenant and name.
func (s *Server) listLocked(k apiv1.KindInfo, tenant string, sel *apiv1.LabelSelector) []apiv1.Object {
	var out []apiv1.Object
	for kk, o := range s.objs {
		if kk.kind != k.Kind || (tenant != "" && kk.tenant != tenant) {
			continue
		}
		if sel != nil && !sel.Matches(o.GetObjectMeta().Labels) {
			continue
		}
		out = append(out, mustClone(o))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].GetObjectMeta(), out[j].GetObjectMeta()
		if a.Tenant != b.Tenant {
			return a.Tenant < b.Tenant
		}
		return a.Name < b.Name
	})
	return out
}

// dependentsLocked lists the refs of objects that refer to o.
func (s *Server) dependentsLocked(k apiv1.KindInfo, o apiv1.Object) []string {
	m := o.GetObjectMeta()
	var deps []string
	for _, other := range s.objs {
		om := other.GetObjectMeta()
		dep := false
		switch k.Kind {
		case apiv1.KindTenant:
			dep = om.Tenant == m.Name
		case apiv1.KindHost:
			ep, ok := other.(*apiv1.Endpoint)
			dep = ok && ep.Spec.Host == m.Name
		case apiv1.KindVPC:
			sn, ok := other.(*apiv1.Subnet)
			dep = ok && om.Tenant == m.Tenant && sn.Spec.VPC == m.Name
		case apiv1.KindSubnet:
			ep, ok := other.(*apiv1.Endpoint)
			dep = ok && om.Tenant == m.Tenant && ep.Spec.Subnet == m.Name
		case apiv1.KindQoSClass:
			ep, ok := other.(*apiv1.Endpoint)
			dep = ok && om.Tenant == m.Tenant && ep.Spec.QoSClass == m.Name
		}
		if dep {
			deps = append(deps, apiv1.RefOf(other).String())
		}
	}
	sort.Strings(deps)
	return deps
}

// validateLocked runs the api/v1 validation of a create (old == nil) or
// an update, with references looked up in the store.
func (s *Server) validateLocked(o, old apiv1.Object) *apiv1.StatusError {
	var err error
	if old == nil {
		err = apiv1.ValidateCreate(o, storeLookup{s})
	} else {
		err = apiv1.ValidateUpdate(o, old, storeLookup{s})
	}
	if err == nil {
		return nil
	}
	var se *apiv1.StatusError
	if errors.As(err, &se) {
		return se
	}
	return apiv1.NewStatus(http.StatusUnprocessableEntity, apiv1.ReasonInvalid, "%v", err)
}

// storeLookup gives api/v1 validation read access to the store; s.mu is held.
type storeLookup struct{ s *Server }

func (l storeLookup) Get(kind, tenant, name string) (apiv1.Object, bool) {
	k, ok := apiv1.LookupKind(kind)
	if !ok {
		return nil, false
	}
	o, ok := l.s.objs[key{k.Kind, scope(k, tenant), name}]
	return o, ok
}

func (l storeLookup) List(kind, tenant string) []apiv1.Object {
	k, ok := apiv1.LookupKind(kind)
	if !ok {
		return nil
	}
	return l.s.listLocked(k, tenant, nil)
}

// fillStatusLocked sets the controller-owned status of a new object.
func (s *Server) fillStatusLocked(k apiv1.KindInfo, o apiv1.Object) *apiv1.StatusError {
	switch o := o.(type) {
	case *apiv1.Host:
		o.Status = apiv1.HostStatus{Liveness: apiv1.LivenessUnknown}
	case *apiv1.VPC:
		s.vniSeq++
		o.Status = apiv1.VPCStatus{VNI: s.vniSeq}
	case *apiv1.Subnet:
		o.Status = apiv1.SubnetStatus{}
		if vpc, ok := s.objs[key{apiv1.KindVPC, o.Metadata.Tenant, o.Spec.VPC}].(*apiv1.VPC); ok {
			o.Status.VNI = vpc.Status.VNI
		}
		if p, err := netip.ParsePrefix(o.Spec.CIDR); err == nil && o.Spec.Gateway == "" {
			o.Spec.Gateway = p.Masked().Addr().Next().String()
		}
	case *apiv1.Endpoint:
		o.Status = apiv1.EndpointStatus{Host: o.Spec.Host, Phase: apiv1.PhasePending}
		sn, ok := s.objs[key{apiv1.KindSubnet, o.Metadata.Tenant, o.Spec.Subnet}].(*apiv1.Subnet)
		if !ok {
			return nil
		}
		o.Status.VNI = sn.Status.VNI
		ip, se := s.allocateLocked(o, sn)
		if se != nil {
			return se
		}
		o.Status.IP = ip.String()
		o.Status.MAC = o.Spec.MAC
		if o.Status.MAC == "" && ip.Is4() {
			b := ip.As4()
			o.Status.MAC = fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
		}
		o.Status.Netns = o.Spec.Netns
		if o.Status.Netns == "" {
			o.Status.Netns = "/var/run/netns/weft-" + o.Metadata.Tenant + "-" + o.Metadata.Name
		}
	}
	return nil
}

// allocateLocked picks the requested or the lowest free address of sn.
func (s *Server) allocateLocked(ep *apiv1.Endpoint, sn *apiv1.Subnet) (netip.Addr, *apiv1.StatusError) {
	p, err := netip.ParsePrefix(sn.Spec.CIDR)
	if err != nil {
		return netip.Addr{}, apiv1.NewBadRequest("subnet %s has a bad CIDR", sn.Metadata.Name)
	}
	used := map[string]bool{sn.Spec.Gateway: true}
	for kk, o := range s.objs {
		if other, ok := o.(*apiv1.Endpoint); ok && kk.tenant == ep.Metadata.Tenant && other.Spec.Subnet == ep.Spec.Subnet {
			used[other.Status.IP] = true
		}
	}
	if ep.Spec.IP != "" {
		if used[ep.Spec.IP] {
			return netip.Addr{}, apiv1.NewConflict("address %s of subnet %s is taken", ep.Spec.IP, sn.Metadata.Name)
		}
		return netip.MustParseAddr(ep.Spec.IP), nil
	}
	p = p.Masked()
	for a := p.Addr().Next(); p.Contains(a); a = a.Next() {
		if !used[a.String()] && p.Contains(a.Next()) { // skip the broadcast address
			return a, nil
		}
	}
	return netip.Addr{}, apiv1.NewConflict("subnet %s has no free address", sn.Metadata.Name)
}

// ---- helpers ----

func byPlural(p string) (apiv1.KindInfo, bool) {
	for _, k := range apiv1.Kinds() {
		if k.Plural == p {
			return k, true
		}
	}
	return apiv1.KindInfo{}, false
}

func scope(k apiv1.KindInfo, tenant string) string {
	if k.Namespaced {
		return tenant
	}
	return ""
}

func keyOf(k apiv1.KindInfo, o apiv1.Object) key {
	m := o.GetObjectMeta()
	return key{k.Kind, scope(k, m.Tenant), m.Name}
}

func refOf(k apiv1.KindInfo, o apiv1.Object) apiv1.Ref {
	kk := keyOf(k, o)
	return apiv1.Ref{Kind: kk.kind, Tenant: kk.tenant, Name: kk.name}
}

func eventOf(rev int64, typ string, k apiv1.KindInfo, o apiv1.Object) event {
	m := o.GetObjectMeta()
	return event{rev: rev, typ: typ, kind: k.Kind, tenant: m.Tenant, labels: m.Labels, data: mustJSON(o)}
}

func watchMatches(ev event, k apiv1.KindInfo, tenant string, sel *apiv1.LabelSelector) bool {
	if ev.typ == "ERROR" {
		return true
	}
	if ev.kind != k.Kind || (tenant != "" && ev.tenant != tenant) {
		return false
	}
	return sel == nil || sel.Matches(ev.labels)
}

// decodeBody decodes a create or update body strictly (JSON, or YAML with
// Content-Type application/yaml) and checks it against the path.
func decodeBody(r *http.Request, k apiv1.KindInfo, tenant, name string) (apiv1.Object, *apiv1.StatusError) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return nil, apiv1.NewBadRequest("read body: %v", err)
	}
	ct := r.Header.Get("Content-Type")
	if strings.Contains(ct, "yaml") {
		if data, err = yaml.YAMLToJSON(data); err != nil {
			return nil, apiv1.NewBadRequest("body is not YAML: %v", err)
		}
	} else if ct != "" && !strings.Contains(ct, "json") {
		return nil, apiv1.NewStatus(http.StatusUnsupportedMediaType, apiv1.ReasonUnsupportedMedia, "Content-Type %q: want application/json or application/yaml", ct)
	}
	o := k.New()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(o); err != nil {
		return nil, apiv1.NewBadRequest("body is not a %s: %v", k.Kind, err)
	}
	tm, m := o.GetTypeMeta(), o.GetObjectMeta()
	if tm.Kind != "" && tm.Kind != k.Kind {
		return nil, apiv1.NewBadRequest("body is a %q, but the path is for %s", tm.Kind, k.Plural)
	}
	if k.Namespaced {
		if m.Tenant == "" {
			m.Tenant = tenant
		}
		if m.Tenant != tenant {
			return nil, apiv1.NewBadRequest("metadata.tenant %q does not match the tenant %q of the path", m.Tenant, tenant)
		}
	}
	if name != "" && m.Name != name {
		return nil, apiv1.NewBadRequest("metadata.name %q does not match the name %q of the path", m.Name, name)
	}
	return o, nil
}

func selectorOf(r *http.Request) (*apiv1.LabelSelector, *apiv1.StatusError) {
	q := r.URL.Query().Get("labelSelector")
	if q == "" {
		return nil, nil
	}
	sel, err := apiv1.ParseSelector(q)
	if err != nil {
		return nil, apiv1.NewBadRequest("labelSelector %q: %v", q, err)
	}
	return &sel, nil
}

// copyStatus copies the status of old (if its kind has one) into o.
func copyStatus(old, o apiv1.Object) {
	switch o := o.(type) {
	case *apiv1.Host:
		o.Status = old.(*apiv1.Host).Status
	case *apiv1.VPC:
		o.Status = old.(*apiv1.VPC).Status
	case *apiv1.Subnet:
		o.Status = old.(*apiv1.Subnet).Status
	case *apiv1.Endpoint:
		o.Status = old.(*apiv1.Endpoint).Status
	}
}

func specAndLabels(o apiv1.Object) any {
	var m struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec json.RawMessage `json:"spec"`
	}
	_ = json.Unmarshal(mustJSON(o), &m)
	return m
}

func jsonEqual(a, b any) bool { return bytes.Equal(mustJSON(a), mustJSON(b)) }

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fakeapi: encode %T: %v", v, err)) // the api types always encode
	}
	return data
}

func mustClone(o apiv1.Object) apiv1.Object {
	cp := apiv1.MustKind(o.GetTypeMeta().Kind).New()
	if err := json.Unmarshal(mustJSON(o), cp); err != nil {
		panic(fmt.Sprintf("fakeapi: copy %T: %v", o, err))
	}
	return cp
}

func writeJSON(w http.ResponseWriter, code int, v any) { writeRaw(w, code, mustJSON(v)) }

func writeRaw(w http.ResponseWriter, code int, data []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, se *apiv1.StatusError) { writeJSON(w, se.Code, se) }
