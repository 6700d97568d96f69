package restreport

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/weftnet/weft/agent"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// api is a minimal fake of the parts of the REST API the reporter uses.
type api struct {
	mu        sync.Mutex
	hosts     map[string]*apiv1.Host
	endpoints map[string]*apiv1.Endpoint // "tenant/name"
	writes    []string
	fail      map[string]int // path → HTTP status to answer with
}

func newAPI(t *testing.T) (*api, *Reporter) {
	a := &api{hosts: map[string]*apiv1.Host{}, endpoints: map[string]*apiv1.Endpoint{}, fail: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /apis/weft/v1/hosts/{name}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.failed(w, r) {
			return
		}
		h, ok := a.hosts[r.PathValue("name")]
		if !ok {
			writeJSON(w, apiv1.NewNotFound(apiv1.Ref{Kind: apiv1.KindHost, Name: r.PathValue("name")}))
			return
		}
		writeJSON(w, h)
	})
	mux.HandleFunc("POST /apis/weft/v1/hosts", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.failed(w, r) {
			return
		}
		var h apiv1.Host
		if err := json.NewDecoder(r.Body).Decode(&h); err != nil {
			writeJSON(w, apiv1.NewBadRequest("%v", err))
			return
		}
		a.writes = append(a.writes, "create host "+h.Metadata.Name+" "+h.Spec.UnderlayIP)
		if _, ok := a.hosts[h.Metadata.Name]; ok {
			writeJSON(w, apiv1.NewAlreadyExists(apiv1.Ref{Kind: apiv1.KindHost, Name: h.Metadata.Name}))
			return
		}
		if h.Spec.UnderlayIP == "" {
			writeJSON(w, apiv1.NewInvalid(apiv1.Ref{Kind: apiv1.KindHost, Name: h.Metadata.Name},
				[]apiv1.FieldError{{Field: "spec.underlayIP", Message: "required"}}))
			return
		}
		a.hosts[h.Metadata.Name] = &h
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(&h)
	})
	mux.HandleFunc("GET /apis/weft/v1/tenants/{tenant}/endpoints/{name}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		id := r.PathValue("tenant") + "/" + r.PathValue("name")
		e, ok := a.endpoints[id]
		if !ok {
			writeJSON(w, apiv1.NewNotFound(apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: r.PathValue("tenant"), Name: r.PathValue("name")}))
			return
		}
		writeJSON(w, e)
	})
	mux.HandleFunc("PUT /apis/weft/v1/tenants/{tenant}/endpoints/{name}/status", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.failed(w, r) {
			return
		}
		id := r.PathValue("tenant") + "/" + r.PathValue("name")
		var e apiv1.Endpoint
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil || e.Kind != apiv1.KindEndpoint {
			writeJSON(w, apiv1.NewBadRequest("bad body: %v", err))
			return
		}
		cur, ok := a.endpoints[id]
		if !ok {
			writeJSON(w, apiv1.NewNotFound(apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: r.PathValue("tenant"), Name: r.PathValue("name")}))
			return
		}
		a.writes = append(a.writes, "status "+id+" "+e.Status.Phase+" "+e.Status.Netns+" "+e.Status.Message)
		cur.Status = e.Status
		writeJSON(w, cur)
	})
	ts := httptest.NewServer(mux)
	c, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		ts.Close()
	})
	return a, New(c)
}

func (a *api) failed(w http.ResponseWriter, r *http.Request) bool {
	code, ok := a.fail[r.URL.Path]
	if ok {
		writeJSON(w, apiv1.NewStatus(code, apiv1.ReasonInternal, "injected"))
	}
	return ok
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if se, ok := v.(*apiv1.StatusError); ok {
		w.WriteHeader(se.Code)
	}
	json.NewEncoder(w).Encode(v)
}

func (a *api) addEndpoint(tenant, name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.endpoints[tenant+"/"+name] = &apiv1.Endpoint{
		TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
		Metadata: apiv1.ObjectMeta{Name: name, Tenant: tenant, ResourceVersion: "5"},
		Spec:     apiv1.EndpointSpec{Subnet: "a", Host: "h1"},
		Status:   apiv1.EndpointStatus{IP: "10.0.1.10", MAC: "02:00:0a:00:01:0a", Host: "h1", VNI: 100, Phase: apiv1.PhasePending},
	}
}

func (a *api) written() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := slices.Clone(a.writes)
	a.writes = nil
	return w
}

func TestRegister(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		setup    func(a *api)
		ip       string
		writes   []string
		rejected bool
		fails    bool
	}{
		{name: "creates the host", ip: "192.0.2.11", writes: []string{"create host h1 192.0.2.11"}},
		{name: "an existing host is left alone", ip: "192.0.2.99", setup: func(a *api) {
			a.hosts["h1"] = &apiv1.Host{TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindHost},
				Metadata: apiv1.ObjectMeta{Name: "h1"}, Spec: apiv1.HostSpec{UnderlayIP: "192.0.2.11"}}
		}},
		{name: "invalid: rejected", ip: "", writes: []string{"create host h1 "}, fails: true, rejected: true},
		{name: "server error: retryable", ip: "192.0.2.11", fails: true, setup: func(a *api) {
			a.fail["/apis/weft/v1/hosts/h1"] = http.StatusServiceUnavailable
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, r := newAPI(t)
			if tc.setup != nil {
				tc.setup(a)
			}
			err := r.Register(ctx, "h1", tc.ip)
			if (err != nil) != tc.fails || errors.Is(err, agent.ErrRejected) != tc.rejected {
				t.Fatalf("Register = %v; want failure %v, rejected %v", err, tc.fails, tc.rejected)
			}
			if diff := cmp.Diff(tc.writes, a.written()); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRegisterUnreachable(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = New(c).Register(context.Background(), "h1", "192.0.2.11")
	if err == nil || errors.Is(err, agent.ErrRejected) {
		t.Fatalf("Register = %v, want a retryable error", err)
	}
}

func TestReportEndpoints(t *testing.T) {
	ctx := context.Background()
	a, r := newAPI(t)
	a.addEndpoint("acme", "web")
	a.addEndpoint("acme", "db")
	reps := []agent.EndpointReport{
		{ID: "acme/web", Netns: "/var/run/netns/wft-h1-e1", Phase: agent.PhaseReady},
		{ID: "acme/db", Phase: agent.PhaseFailed, Message: "veth: EEXIST"},
		{ID: "acme/gone", Phase: agent.PhaseReady}, // deleted meanwhile: skipped
	}
	if err := r.ReportEndpoints(ctx, reps); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{
		"status acme/web Ready /var/run/netns/wft-h1-e1 ",
		"status acme/db Failed  veth: EEXIST",
	}, a.written()); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	// The controller's part of the status is kept.
	a.mu.Lock()
	got := a.endpoints["acme/web"].Status
	a.mu.Unlock()
	want := apiv1.EndpointStatus{IP: "10.0.1.10", MAC: "02:00:0a:00:01:0a", Host: "h1", VNI: 100,
		Netns: "/var/run/netns/wft-h1-e1", Phase: apiv1.PhaseReady}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	// The same reports again write nothing.
	if err := r.ReportEndpoints(ctx, reps); err != nil {
		t.Fatal(err)
	}
	if w := a.written(); len(w) != 0 {
		t.Errorf("unchanged reports wrote %v", w)
	}
}

func TestReportEndpointsErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("bad ID is rejected", func(t *testing.T) {
		_, r := newAPI(t)
		err := r.ReportEndpoints(ctx, []agent.EndpointReport{{ID: "no-tenant", Phase: agent.PhaseReady}})
		if !errors.Is(err, agent.ErrRejected) {
			t.Errorf("ReportEndpoints = %v, want ErrRejected", err)
		}
	})
	t.Run("server error is retryable, even next to a rejection", func(t *testing.T) {
		a, r := newAPI(t)
		a.addEndpoint("acme", "web")
		a.fail["/apis/weft/v1/tenants/acme/endpoints/web/status"] = http.StatusInternalServerError
		err := r.ReportEndpoints(ctx, []agent.EndpointReport{{ID: "no-tenant"}, {ID: "acme/web", Phase: agent.PhaseReady}})
		if err == nil || errors.Is(err, agent.ErrRejected) {
			t.Errorf("ReportEndpoints = %v, want a retryable error", err)
		}
	})
	t.Run("bad request is rejected", func(t *testing.T) {
		a, r := newAPI(t)
		a.addEndpoint("acme", "web")
		a.fail["/apis/weft/v1/tenants/acme/endpoints/web/status"] = http.StatusUnprocessableEntity
		err := r.ReportEndpoints(ctx, []agent.EndpointReport{{ID: "acme/web", Phase: agent.PhaseReady}})
		var se *apiv1.StatusError
		if !errors.Is(err, agent.ErrRejected) || !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity {
			t.Errorf("ReportEndpoints = %v, want ErrRejected wrapping the 422", err)
		}
	})
}
