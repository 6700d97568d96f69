package restreport

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/weftnet/weft/agent"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/internal/apitest"
	"github.com/weftnet/weft/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, apitest.LeakOptions()...) }

// newAPI starts the API (real handler, registry and etcd) and a Reporter
// that uses it.
func newAPI(t *testing.T) (*apitest.Server, *Reporter) {
	t.Helper()
	srv := apitest.Start(t)
	return srv, New(srv.Client)
}

// create stores objects directly in the registry.
func create(t *testing.T, srv *apitest.Server, objs ...apiv1.Object) {
	t.Helper()
	for _, o := range objs {
		if _, err := srv.Env.Registry.Create(t.Context(), o); err != nil {
			t.Fatalf("create %s: %v", apiv1.RefOf(o), err)
		}
	}
}

// network stores tenant acme, host h1 and subnet acme/a, and endpoints of
// the given names on them.
func network(t *testing.T, srv *apitest.Server, endpoints ...string) {
	t.Helper()
	create(t, srv, etcdtest.Tenant("acme"), etcdtest.Host("h1", "192.0.2.11"),
		etcdtest.VPC("acme", "main", "10.0.0.0/16"), etcdtest.Subnet("acme", "a", "main", "10.0.1.0/24"))
	for _, name := range endpoints {
		create(t, srv, etcdtest.Endpoint("acme", name, "a", "h1"))
	}
}

func stored(t *testing.T, srv *apitest.Server, ref apiv1.Ref) apiv1.Object {
	t.Helper()
	o, err := srv.Env.Registry.Get(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// failWith answers the requests for path with an error of code.
func failWith(path string, code int) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != path {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(apiv1.NewStatus(code, apiv1.ReasonInternal, "injected"))
		return true
	}
}

func TestRegister(t *testing.T) {
	const post = "POST /apis/weft/v1/hosts"
	for _, tc := range []struct {
		name     string
		setup    func(t *testing.T, srv *apitest.Server)
		ip       string
		writes   []string
		rejected bool
		fails    bool
		wantIP   string // the stored host's underlay IP; "" if none is stored
	}{
		{name: "creates the host", ip: "192.0.2.11", writes: []string{post}, wantIP: "192.0.2.11"},
		{name: "an existing host is left alone", ip: "192.0.2.99", wantIP: "192.0.2.11", setup: func(t *testing.T, srv *apitest.Server) {
			create(t, srv, etcdtest.Host("h1", "192.0.2.11"))
		}},
		{name: "invalid: rejected", ip: "", writes: []string{post}, fails: true, rejected: true},
		{name: "server error: retryable", ip: "192.0.2.11", fails: true, setup: func(t *testing.T, srv *apitest.Server) {
			srv.Intercept(failWith("/apis/weft/v1/hosts/h1", http.StatusServiceUnavailable))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, r := newAPI(t)
			if tc.setup != nil {
				tc.setup(t, srv)
			}
			err := r.Register(t.Context(), "h1", tc.ip)
			if (err != nil) != tc.fails || errors.Is(err, agent.ErrRejected) != tc.rejected {
				t.Fatalf("Register = %v; want failure %v, rejected %v", err, tc.fails, tc.rejected)
			}
			if diff := cmp.Diff(tc.writes, srv.Writes()); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			gotIP := ""
			if h, err := srv.Env.Registry.Get(t.Context(), apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}); err == nil {
				gotIP = h.(*apiv1.Host).Spec.UnderlayIP
			}
			if gotIP != tc.wantIP {
				t.Errorf("stored host's underlay IP %q, want %q", gotIP, tc.wantIP)
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
	ctx := t.Context()
	srv, r := newAPI(t)
	network(t, srv, "web", "db")
	web := apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "web"}
	db := apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "db"}
	// The controller's part of the status, kept by every report.
	allocated := func(ref apiv1.Ref, netns, phase, msg string) apiv1.EndpointStatus {
		st := stored(t, srv, ref).(*apiv1.Endpoint).Status
		st.Netns, st.Phase, st.Message = netns, phase, msg
		return st
	}
	wantWeb := allocated(web, "/var/run/netns/wft-h1-e1", agent.PhaseReady, "")
	wantDB := allocated(db, "", agent.PhaseFailed, "veth: EEXIST")

	reps := []agent.EndpointReport{
		{ID: "acme/web", Netns: "/var/run/netns/wft-h1-e1", Phase: agent.PhaseReady},
		{ID: "acme/db", Phase: agent.PhaseFailed, Message: "veth: EEXIST"},
		{ID: "acme/gone", Phase: agent.PhaseReady}, // deleted meanwhile: skipped
	}
	if err := r.ReportEndpoints(ctx, reps); err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[apiv1.Ref]apiv1.EndpointStatus{web: wantWeb, db: wantDB} {
		if diff := cmp.Diff(want, stored(t, srv, ref).(*apiv1.Endpoint).Status); diff != "" {
			t.Errorf("%s status (-want +got):\n%s", ref, diff)
		}
	}

	// The same reports again write nothing.
	rev := srv.Env.Registry.Revision()
	if err := r.ReportEndpoints(ctx, reps); err != nil {
		t.Fatal(err)
	}
	if got := srv.Env.Registry.Revision(); got != rev {
		t.Errorf("unchanged reports wrote: revision %d -> %d", rev, got)
	}

	// A report clears what it no longer says (db's message).
	if err := r.ReportEndpoints(ctx, []agent.EndpointReport{{ID: "acme/db", Netns: "/var/run/netns/wft-h1-e2", Phase: agent.PhaseReady}}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(allocated(db, "/var/run/netns/wft-h1-e2", agent.PhaseReady, ""), stored(t, srv, db).(*apiv1.Endpoint).Status); diff != "" {
		t.Errorf("db status after Ready (-want +got):\n%s", diff)
	}
}

func TestReportEndpointsErrors(t *testing.T) {
	const webStatus = "/apis/weft/v1/tenants/acme/endpoints/web/status"
	t.Run("bad ID is rejected", func(t *testing.T) {
		c, err := client.New("http://127.0.0.1:1") // not asked
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = New(c).ReportEndpoints(t.Context(), []agent.EndpointReport{{ID: "no-tenant", Phase: agent.PhaseReady}})
		if !errors.Is(err, agent.ErrRejected) {
			t.Errorf("ReportEndpoints = %v, want ErrRejected", err)
		}
	})
	t.Run("server error is retryable, even next to a rejection", func(t *testing.T) {
		srv, r := newAPI(t)
		network(t, srv, "web")
		srv.Intercept(failWith(webStatus, http.StatusInternalServerError))
		err := r.ReportEndpoints(t.Context(), []agent.EndpointReport{{ID: "no-tenant"}, {ID: "acme/web", Phase: agent.PhaseReady}})
		if err == nil || errors.Is(err, agent.ErrRejected) {
			t.Errorf("ReportEndpoints = %v, want a retryable error", err)
		}
	})
	t.Run("bad request is rejected", func(t *testing.T) {
		srv, r := newAPI(t)
		network(t, srv, "web")
		srv.Intercept(failWith(webStatus, http.StatusUnprocessableEntity))
		err := r.ReportEndpoints(t.Context(), []agent.EndpointReport{{ID: "acme/web", Phase: agent.PhaseReady}})
		var se *apiv1.StatusError
		if !errors.Is(err, agent.ErrRejected) || !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity {
			t.Errorf("ReportEndpoints = %v, want ErrRejected wrapping the 422", err)
		}
	})
}
