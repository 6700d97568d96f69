package restreport

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
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

// ignoreReady leaves the Ready condition out of comparisons.
var ignoreReady = cmpopts.IgnoreSliceElements(func(c apiv1.Condition) bool { return c.Type == apiv1.ConditionReady })

func TestReportEndpoints(t *testing.T) {
	ctx := t.Context()
	srv, r := newAPI(t)
	network(t, srv, "web", "db")
	web := apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "web"}
	db := apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "db"}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(tm time.Time) func() time.Time { return func() time.Time { return tm } }
	r.now = at(t0)
	// The controller's part of the status, kept by every report.
	allocated := func(ref apiv1.Ref, netns, phase, msg string, conds ...apiv1.Condition) apiv1.EndpointStatus {
		st := stored(t, srv, ref).(*apiv1.Endpoint).Status
		st.Netns, st.Phase, st.Message, st.Conditions = netns, phase, msg, conds
		return st
	}
	cond := func(typ, status, msg string, gen int64, since time.Time) apiv1.Condition {
		reason := ReasonProgrammed
		if status == apiv1.ConditionFalse {
			reason = ReasonNotProgrammed
		}
		return apiv1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
			LastTransitionTime: since.Format(time.RFC3339)}
	}
	const policy, qos, yes, no = apiv1.ConditionPolicyProgrammed, apiv1.ConditionQoSProgrammed, apiv1.ConditionTrue, apiv1.ConditionFalse
	check := func(step string, want map[apiv1.Ref]apiv1.EndpointStatus) {
		t.Helper()
		for ref, w := range want {
			// (Ready is the controller's, derived from these; see package registry.)
			if diff := cmp.Diff(w, stored(t, srv, ref).(*apiv1.Endpoint).Status, ignoreReady); diff != "" {
				t.Errorf("%s: %s status (-want +got):\n%s", step, ref, diff)
			}
		}
	}
	wantWeb := allocated(web, "/var/run/netns/wft-h1-e1", agent.PhaseReady, "", cond(policy, yes, "", 1, t0), cond(qos, yes, "", 1, t0))
	wantDB := allocated(db, "", agent.PhaseFailed, "veth: EEXIST", cond(policy, no, "veth: EEXIST", 1, t0), cond(qos, no, "veth: EEXIST", 1, t0))

	reps := []agent.EndpointReport{
		{ID: "acme/web", Netns: "/var/run/netns/wft-h1-e1", Phase: agent.PhaseReady, Generation: 1},
		{ID: "acme/db", Phase: agent.PhaseFailed, Message: "veth: EEXIST", Generation: 1, PolicyErr: "veth: EEXIST", QoSErr: "veth: EEXIST"},
		{ID: "acme/gone", Phase: agent.PhaseReady}, // deleted meanwhile: skipped
	}
	if err := r.ReportEndpoints(ctx, reps); err != nil {
		t.Fatal(err)
	}
	check("first reports", map[apiv1.Ref]apiv1.EndpointStatus{web: wantWeb, db: wantDB})

	// The same reports again write nothing, later too.
	r.now = at(t0.Add(time.Minute))
	rev := srv.Env.Registry.Revision()
	if err := r.ReportEndpoints(ctx, reps); err != nil {
		t.Fatal(err)
	}
	if got := srv.Env.Registry.Revision(); got != rev {
		t.Errorf("unchanged reports wrote: revision %d -> %d", rev, got)
	}

	// A report clears what it no longer says (db's message); a condition
	// that changes status moves its transition time, one that keeps it
	// keeps it whatever else changes.
	t1 := t0.Add(2 * time.Minute)
	r.now = at(t1)
	if err := r.ReportEndpoints(ctx, []agent.EndpointReport{{ID: "acme/db", Netns: "/var/run/netns/wft-h1-e2", Phase: agent.PhaseReady,
		Generation: 2, QoSErr: "vpc 7: htb: EINVAL"}}); err != nil {
		t.Fatal(err)
	}
	wantDB = allocated(db, "/var/run/netns/wft-h1-e2", agent.PhaseReady, "", cond(policy, yes, "", 2, t1), cond(qos, no, "vpc 7: htb: EINVAL", 2, t0))
	check("db Ready", map[apiv1.Ref]apiv1.EndpointStatus{db: wantDB})

	// A new reporter (the agent restarted) reads the stored conditions
	// first: the same report writes nothing, transition times are kept.
	r2 := New(srv.Client)
	r2.now = at(t1.Add(time.Hour))
	rev = srv.Env.Registry.Revision()
	if err := r2.ReportEndpoints(ctx, reps[:1]); err != nil {
		t.Fatal(err)
	}
	if got := srv.Env.Registry.Revision(); got != rev {
		t.Errorf("a restarted reporter rewrote an unchanged status: revision %d -> %d", rev, got)
	}
	check("after a restart", map[apiv1.Ref]apiv1.EndpointStatus{web: wantWeb})

	// Gone: nothing is written, the reporter forgets the endpoint.
	before := len(srv.Requests())
	if err := r2.ReportEndpoints(ctx, []agent.EndpointReport{{ID: "acme/web", Gone: true}}); err != nil {
		t.Fatal(err)
	}
	if reqs := srv.Requests()[before:]; len(reqs) > 0 {
		t.Errorf("a Gone report made requests %v", reqs)
	}
	if _, ok := r2.conds["acme/web"]; ok {
		t.Errorf("a Gone endpoint's conditions are still kept")
	}
}

// TestReportLongMessage: messages longer than the API takes are cut.
func TestReportLongMessage(t *testing.T) {
	srv, r := newAPI(t)
	network(t, srv, "web")
	long := strings.Repeat("é", apiv1.MaxMessageLen+10)
	if err := r.ReportEndpoints(t.Context(), []agent.EndpointReport{{ID: "acme/web", Phase: agent.PhaseFailed, Message: long,
		PolicyErr: long, QoSErr: long}}); err != nil {
		t.Fatal(err)
	}
	st := stored(t, srv, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: "acme", Name: "web"}).(*apiv1.Endpoint).Status
	for _, m := range []string{st.Message, st.Conditions[0].Message, st.Conditions[1].Message} {
		if n := utf8.RuneCountInString(m); n != apiv1.MaxMessageLen || !strings.HasSuffix(m, "…") {
			t.Errorf("message of %d characters ending %q, want %d ending …", n, m[len(m)-8:], apiv1.MaxMessageLen)
		}
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
