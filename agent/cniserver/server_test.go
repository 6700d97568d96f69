package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"go.uber.org/goleak"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/agent/cnirpc"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeAPI keeps objects in memory and plays the agent: what happens to an
// endpoint of the host is reported through the tap, as the agent would.
type fakeAPI struct {
	tap *Tap

	mu     sync.Mutex
	objs   map[string]apiv1.Object // by "kind/tenant/name"
	n      int
	phase  string // what the agent reports of a new endpoint ("": nothing)
	writes int
	// endpointLists are the field selectors of the Endpoint lists.
	endpointLists []string
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{objs: map[string]apiv1.Object{}, phase: agent.PhaseReady}
	f.tap = NewTap(nopReporter{})
	f.put(&apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: "h1", UID: "host-uid"}})
	f.put(&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "pods", Tenant: "acme", UID: "sn"},
		Spec: apiv1.SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24", Gateway: "10.0.1.1"}})
	for name, rate := range map[string]string{"slow": "100Mbit", "fast": "1Gbit"} {
		f.put(&apiv1.QoSClass{TypeMeta: tm(apiv1.KindQoSClass), Metadata: apiv1.ObjectMeta{Name: name, Tenant: "acme"},
			Spec: apiv1.QoSClassSpec{MaxRate: apiv1.Bandwidth(rate)}})
	}
	return f
}

func tm(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }

type nopReporter struct{}

func (nopReporter) Register(context.Context, string, string) error                { return nil }
func (nopReporter) ReportEndpoints(context.Context, []agent.EndpointReport) error { return nil }

func key(kind, tenant, name string) string { return kind + "/" + tenant + "/" + name }

func (f *fakeAPI) put(o apiv1.Object) {
	m := o.GetObjectMeta()
	f.objs[key(o.GetTypeMeta().Kind, m.Tenant, m.Name)] = o
}

// copyOf returns a deep copy of o.
func copyOf(o apiv1.Object) apiv1.Object {
	b, _ := json.Marshal(o)
	c, _ := apiv1.New(o.GetTypeMeta().Kind)
	_ = json.Unmarshal(b, c)
	return c
}

func (f *fakeAPI) report(r agent.EndpointReport) {
	go func() { _ = f.tap.ReportEndpoints(context.Background(), []agent.EndpointReport{r}) }()
}

func (f *fakeAPI) Create(_ context.Context, o apiv1.Object, _ ...apiv1.WriteOption) (apiv1.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := o.GetObjectMeta()
	k := key(o.GetTypeMeta().Kind, m.Tenant, m.Name)
	if _, ok := f.objs[k]; ok {
		return nil, apiv1.NewAlreadyExists(apiv1.RefOf(o))
	}
	f.writes++
	c := copyOf(o)
	f.n++
	c.GetObjectMeta().UID, c.GetObjectMeta().Generation = fmt.Sprintf("uid-%d", f.n), 1
	if ep, ok := c.(*apiv1.Endpoint); ok {
		ep.Status = apiv1.EndpointStatus{IP: fmt.Sprintf("10.0.1.%d", 10+f.n), MAC: "02:00:00:00:00:01", Host: ep.Spec.Host, Phase: apiv1.PhasePending}
		if ep.Spec.IP != "" {
			ep.Status.IP = ep.Spec.IP
		}
		if f.phase != "" {
			f.report(agent.EndpointReport{ID: m.Tenant + "/" + m.Name, UID: ep.Metadata.UID, Generation: 1, Phase: f.phase, Netns: ep.Spec.Netns, Message: "injected"})
		}
	}
	f.objs[k] = c
	return copyOf(c), nil
}

func (f *fakeAPI) Get(_ context.Context, kind, tenant, name string) (apiv1.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objs[key(kind, tenant, name)]
	if !ok {
		return nil, apiv1.NewNotFound(apiv1.Ref{Kind: kind, Tenant: tenant, Name: name})
	}
	return copyOf(o), nil
}

func (f *fakeAPI) Update(_ context.Context, o apiv1.Object, _ ...apiv1.WriteOption) (apiv1.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := o.GetObjectMeta()
	k := key(o.GetTypeMeta().Kind, m.Tenant, m.Name)
	if _, ok := f.objs[k]; !ok {
		return nil, apiv1.NewNotFound(apiv1.RefOf(o))
	}
	f.writes++
	f.objs[k] = copyOf(o)
	return copyOf(o), nil
}

func (f *fakeAPI) Delete(_ context.Context, kind, tenant, name string, _ ...apiv1.WriteOption) (apiv1.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := key(kind, tenant, name)
	o, ok := f.objs[k]
	if !ok {
		return nil, apiv1.NewNotFound(apiv1.Ref{Kind: kind, Tenant: tenant, Name: name})
	}
	f.writes++
	delete(f.objs, k)
	if kind == apiv1.KindEndpoint {
		f.report(agent.EndpointReport{ID: tenant + "/" + name, Gone: true})
	}
	return o, nil
}

// List lists kind; of Endpoints, it takes a field selector "spec.host=H"
// (or none) and records it.
func (f *fakeAPI) List(_ context.Context, kind, tenant, _ string, opts ...client.ListOption) ([]apiv1.Object, string, error) {
	q := url.Values{}
	for _, o := range opts {
		o(q)
	}
	fields := q.Get("fieldSelector")
	host, byHost := strings.CutPrefix(fields, "spec.host=")
	if fields != "" && (!byHost || strings.ContainsAny(host, ",!=")) {
		return nil, "", fmt.Errorf("fake API: field selector %q not understood", fields)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if kind == apiv1.KindEndpoint {
		f.endpointLists = append(f.endpointLists, fields)
	}
	var out []apiv1.Object
	for _, o := range f.objs {
		if o.GetTypeMeta().Kind != kind || tenant != "" && o.GetObjectMeta().Tenant != tenant {
			continue
		}
		if ep, ok := o.(*apiv1.Endpoint); ok && byHost && ep.Spec.Host != host {
			continue
		}
		out = append(out, copyOf(o))
	}
	return out, "", nil
}

// listedEndpoints returns the field selectors of the Endpoint lists so far.
func (f *fakeAPI) listedEndpoints() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.endpointLists)
}

// endpoints returns the stored endpoints by name.
func (f *fakeAPI) endpoints() map[string]*apiv1.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]*apiv1.Endpoint{}
	for _, o := range f.objs {
		if ep, ok := o.(*apiv1.Endpoint); ok {
			out[ep.Metadata.Name] = ep
		}
	}
	return out
}

func (f *fakeAPI) setPhase(p string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.phase = p
}

// newServer starts a server on a fake API.
func newServer(t *testing.T, mod ...func(*Config)) (*fakeAPI, string) {
	t.Helper()
	f := newFakeAPI()
	cfg := Config{Socket: filepath.Join(t.TempDir(), "cni.sock"), Host: "h1", API: f, Tap: f.tap,
		Default: Selection{Tenant: "acme", Subnet: "pods"}, Timeout: 5 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f, cfg.Socket
}

// cniCall makes a CNI call of the network "weft" (extra is merged into its
// configuration).
func cniCall(t *testing.T, socket, command, container string, extra map[string]any) (*types100.Result, error) {
	t.Helper()
	conf := map[string]any{"cniVersion": "1.1.0", "name": "weft", "type": "weft-cni", "dns": map[string]any{"nameservers": []string{"10.0.1.2"}}}
	for k, v := range extra {
		conf[k] = v
	}
	b, _ := json.Marshal(conf)
	res, err := cnirpc.Call(t.Context(), socket, &cnirpc.Request{Command: command, ContainerID: container,
		Netns: "/run/netns/" + container, IfName: "eth0", Args: "K8S_POD_NAME=" + container, Config: b})
	if err != nil || command != "ADD" {
		return nil, err
	}
	r, err := types100.NewResult(res)
	if err != nil {
		t.Fatalf("result %s: %v", res, err)
	}
	out, _ := types100.GetResult(r)
	return out, nil
}

func code(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestAddDelGC(t *testing.T) {
	f, sock := newServer(t)
	r, err := cniCall(t, sock, "ADD", "c1", nil)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	want := `{"cniVersion":"1.1.0","dns":{"nameservers":["10.0.1.2"]},` +
		`"interfaces":[{"mac":"02:00:00:00:00:01","name":"eth0","sandbox":"/run/netns/c1"}],` +
		`"ips":[{"address":"10.0.1.11/24","gateway":"10.0.1.1","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.1.1"}]}`
	if b, _ := json.Marshal(r); string(b) != want {
		t.Errorf("result\n got %s\nwant %s", b, want)
	}
	name := attachment{network: "weft", containerID: "c1", ifName: "eth0"}.endpointName()
	ep := f.endpoints()[name]
	if ep == nil || ep.Spec.Netns != "/run/netns/c1" || ep.Spec.Host != "h1" || ep.Metadata.Annotations[AnnotationContainerID] != "c1" ||
		ep.Metadata.Annotations["cni-args.weft.io/K8S_POD_NAME"] != "c1" || ep.Metadata.OwnerReferences[0].UID != "host-uid" {
		t.Fatalf("endpoint: %+v", ep)
	}
	// ADD twice: the same attachment.
	if r2, err := cniCall(t, sock, "ADD", "c1", nil); err != nil || r2.IPs[0].Address.String() != r.IPs[0].Address.String() {
		t.Errorf("second ADD: %v, %v", r2, err)
	}
	if n := len(f.endpoints()); n != 1 {
		t.Errorf("%d endpoints after two ADDs", n)
	}
	// DEL, DEL again, DEL of something never added.
	for _, c := range []string{"c1", "c1", "never"} {
		if _, err := cniCall(t, sock, "DEL", c, nil); err != nil {
			t.Errorf("DEL %s: %v", c, err)
		}
	}
	if n := len(f.endpoints()); n != 0 {
		t.Errorf("%d endpoints after DEL", n)
	}
	// GC keeps the valid attachments.
	for _, c := range []string{"c2", "c3"} {
		if _, err := cniCall(t, sock, "ADD", c, nil); err != nil {
			t.Fatalf("ADD %s: %v", c, err)
		}
	}
	valid := map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": "c2", "ifname": "eth0"}}}
	if _, err := cniCall(t, sock, "GC", "", valid); err != nil {
		t.Fatalf("GC: %v", err)
	}
	var left []string
	for _, ep := range f.endpoints() {
		left = append(left, ep.Metadata.Annotations[AnnotationContainerID])
	}
	if len(left) != 1 || left[0] != "c2" {
		t.Errorf("after GC: %v, want c2", left)
	}
	if _, err := cniCall(t, sock, "STATUS", "", nil); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if _, err := cniCall(t, sock, "CHECK", "never", nil); code(err) != types.ErrUnknownContainer {
		t.Errorf("CHECK of no attachment: %v", err)
	}
	// The adoption at start and GC list this host's endpoints only, not
	// every endpoint of the cluster.
	if got := f.listedEndpoints(); len(got) < 2 || slices.ContainsFunc(got, func(s string) bool { return s != "spec.host=h1" }) {
		t.Errorf("endpoint lists with field selectors %q, want spec.host=h1 each (adoption and GC)", got)
	}
}

// TestAddCleansUp: an ADD whose endpoint fails, or is not programmed in
// time, deletes it and fails.
func TestAddCleansUp(t *testing.T) {
	for _, tc := range []struct {
		name, phase string
		code        uint
	}{
		{"failed", agent.PhaseFailed, types.ErrInternal},
		{"not programmed in time", "", types.ErrTryAgainLater},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, sock := newServer(t, func(c *Config) { c.Timeout = 200 * time.Millisecond })
			f.setPhase(tc.phase)
			_, err := cniCall(t, sock, "ADD", "c1", nil)
			if code(err) != tc.code {
				t.Errorf("ADD: %v, want code %d", err, tc.code)
			}
			if n := len(f.endpoints()); n != 0 {
				t.Errorf("%d endpoints left", n)
			}
		})
	}
}

func TestBandwidth(t *testing.T) {
	f, sock := newServer(t)
	bw := func(rate int) map[string]any {
		return map[string]any{"runtimeConfig": map[string]any{"bandwidth": map[string]any{"ingressRate": rate, "egressRate": rate}}}
	}
	if _, err := cniCall(t, sock, "ADD", "c1", bw(150_000_000)); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	for _, ep := range f.endpoints() {
		if ep.Spec.QoSClass != "slow" {
			t.Errorf("150 Mbit/s got class %q, want slow (100Mbit)", ep.Spec.QoSClass)
		}
	}
	_, err := cniCall(t, sock, "ADD", "c2", bw(1000))
	if code(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "fast (1Gbit), slow (100Mbit)") {
		t.Errorf("ADD at 1000 bit/s: %v, want a refusal naming the classes", err)
	}
}

func TestUnreachable(t *testing.T) {
	_, err := cnirpc.Call(t.Context(), filepath.Join(t.TempDir(), "none.sock"), &cnirpc.Request{Command: "ADD", Config: json.RawMessage(`{}`)})
	if code(err) != types.ErrTryAgainLater {
		t.Errorf("call to no agent: %v, want code %d", err, types.ErrTryAgainLater)
	}
}
