package registry

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's embedded server and client keep a few process-wide goroutines.
		goleak.IgnoreTopFunction("go.etcd.io/etcd/pkg/v3/logutil.(*MergeLogger).outputLoop"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

// newRegistry starts embedded etcd, a store and a registry in a temp dir.
func newRegistry(t *testing.T) (*Registry, *store.Store) {
	t.Helper()
	st := startStore(t, startEtcd(t))
	return startRegistry(t, st), st
}

// startEtcd starts embedded etcd in a temp dir.
func startEtcd(tb testing.TB) *store.Embedded {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emb, err := store.StartEmbedded(ctx, store.EmbedConfig{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { emb.Close() })
	return emb
}

// startStore starts a Store on an etcd client of its own, as a replica has.
func startStore(tb testing.TB, emb *store.Embedded) *store.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := emb.Client()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	st, err := store.New(store.Config{Client: cli})
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// startRegistry starts a Registry on st.
func startRegistry(tb testing.TB, st *store.Store) *Registry {
	tb.Helper()
	return startRegistryWith(tb, Config{Store: st})
}

// startRegistryWith starts a Registry configured with cfg.
func startRegistryWith(tb testing.TB, cfg Config) *Registry {
	tb.Helper()
	r, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

func tm(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }

func tenant(name string) *apiv1.Tenant {
	return &apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: name}}
}
func host(name, ip string) *apiv1.Host {
	return &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: name}, Spec: apiv1.HostSpec{UnderlayIP: ip}}
}
func vpc(t, name string, cidrs ...string) *apiv1.VPC {
	return &apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: name, Tenant: t}, Spec: apiv1.VPCSpec{CIDRs: cidrs}}
}
func subnet(t, name, vpc, cidr string) *apiv1.Subnet {
	return &apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: name, Tenant: t}, Spec: apiv1.SubnetSpec{VPC: vpc, CIDR: cidr}}
}
func endpoint(t, name, sn, h string) *apiv1.Endpoint {
	return &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: name, Tenant: t}, Spec: apiv1.EndpointSpec{Subnet: sn, Host: h}}
}

func mustCreate(t *testing.T, r *Registry, objs ...apiv1.Object) {
	t.Helper()
	for _, o := range objs {
		if _, err := r.Create(context.Background(), o); err != nil {
			t.Fatalf("create %s: %v", apiv1.RefOf(o), err)
		}
	}
}

// base creates two tenants with the same VPC range, a subnet each and two hosts.
func base(t *testing.T, r *Registry) {
	mustCreate(t, r, tenant("acme"), tenant("globex"), host("h1", "192.0.2.1"), host("h2", "192.0.2.2"),
		vpc("acme", "main", "10.0.0.0/16"), vpc("globex", "main", "10.0.0.0/16"),
		subnet("acme", "a", "main", "10.0.1.0/24"), subnet("globex", "a", "main", "10.0.1.0/24"))
}

func TestCreateAllocatesAndFillsStatus(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	a, _ := r.Get(ctx, apiv1.Ref{Kind: apiv1.KindVPC, Tenant: "acme", Name: "main"})
	g, _ := r.Get(ctx, apiv1.Ref{Kind: apiv1.KindVPC, Tenant: "globex", Name: "main"})
	h1, _ := r.Get(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"})
	h2, _ := r.Get(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h2"})
	if id1, id2 := h1.(*apiv1.Host).Status.HostID, h2.(*apiv1.Host).Status.HostID; id1 == 0 || id2 == 0 || id1 == id2 {
		t.Errorf("host IDs h1=%d h2=%d: want distinct, non-zero", id1, id2)
	}
	av, gv := a.(*apiv1.VPC).Status.VNI, g.(*apiv1.VPC).Status.VNI
	if av == 0 || gv == 0 || av == gv {
		t.Fatalf("VNIs acme=%d globex=%d: want distinct, non-zero", av, gv)
	}
	out, err := r.Create(ctx, endpoint("acme", "e1", "a", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	ep := out.(*apiv1.Endpoint)
	want := apiv1.EndpointStatus{IP: "10.0.1.2", MAC: "0a:58:0a:00:01:02", Host: "h1", VNI: av, Phase: apiv1.PhasePending, Identity: 1,
		Conditions: []apiv1.Condition{{Type: apiv1.ConditionReady, Status: apiv1.ConditionFalse, Reason: apiv1.PhasePending, ObservedGeneration: 1}}}
	if diff := cmp.Diff(want, ep.Status, cmpopts.IgnoreFields(apiv1.Condition{}, "LastTransitionTime")); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if ep.Metadata.ResourceVersion == "" || ep.Metadata.UID == "" || ep.Metadata.Generation != 1 || ep.Metadata.CreationTimestamp == "" {
		t.Errorf("metadata not filled: %+v", ep.Metadata)
	}
	// Read-your-writes.
	got, err := r.Get(ctx, apiv1.RefOf(ep))
	if err != nil {
		t.Fatal(err)
	}
	if got.GetObjectMeta().ResourceVersion != ep.Metadata.ResourceVersion {
		t.Errorf("get after create: rv %s, want %s", got.GetObjectMeta().ResourceVersion, ep.Metadata.ResourceVersion)
	}
}

func TestWriteErrors(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	static := endpoint("acme", "fixed", "a", "h1")
	static.Spec.IP = "10.0.1.50"
	mustCreate(t, r, static)

	tests := []struct {
		name       string
		do         func() error
		wantReason string
	}{
		{"duplicate name", func() error { _, err := r.Create(ctx, tenant("acme")); return err }, apiv1.ReasonAlreadyExists},
		{"static ip taken", func() error {
			e := endpoint("acme", "other", "a", "h2")
			e.Spec.IP = "10.0.1.50"
			_, err := r.Create(ctx, e)
			return err
		}, apiv1.ReasonConflict},
		{"same ip other tenant is fine", func() error {
			e := endpoint("globex", "fixed", "a", "h2")
			e.Spec.IP = "10.0.1.50"
			_, err := r.Create(ctx, e)
			return err
		}, ""},
		{"unknown subnet", func() error { _, err := r.Create(ctx, endpoint("acme", "x", "nope", "h1")); return err }, apiv1.ReasonInvalid},
		{"unknown host", func() error { _, err := r.Create(ctx, endpoint("acme", "x", "a", "h9")); return err }, apiv1.ReasonInvalid},
		{"unknown tenant", func() error { _, err := r.Create(ctx, vpc("nobody", "v", "10.0.0.0/16")); return err }, apiv1.ReasonInvalid},
		{"overlapping subnet", func() error { _, err := r.Create(ctx, subnet("acme", "b", "main", "10.0.1.128/25")); return err }, apiv1.ReasonInvalid},
		{"delete VPC with subnets", func() error {
			_, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindVPC, Tenant: "acme", Name: "main"})
			return err
		}, apiv1.ReasonConflict},
		{"delete subnet with endpoints", func() error {
			_, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindSubnet, Tenant: "acme", Name: "a"})
			return err
		}, apiv1.ReasonConflict},
		{"delete host with endpoints", func() error {
			_, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"})
			return err
		}, apiv1.ReasonConflict},
		{"delete tenant with objects", func() error {
			_, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindTenant, Name: "acme"})
			return err
		}, apiv1.ReasonConflict},
		{"delete missing", func() error {
			_, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindSubnet, Tenant: "acme", Name: "zz"})
			return err
		}, apiv1.ReasonNotFound},
		{"stale update", func() error {
			v := vpc("acme", "main", "10.0.0.0/16", "10.1.0.0/16")
			v.Metadata.ResourceVersion = "1"
			_, err := r.Update(ctx, v)
			return err
		}, apiv1.ReasonConflict},
		{"update immutable subnet cidr", func() error {
			_, err := r.Update(ctx, subnet("acme", "a", "main", "10.0.2.0/24"))
			return err
		}, apiv1.ReasonInvalid},
		{"shrink VPC below its subnet", func() error {
			_, err := r.Update(ctx, vpc("acme", "main", "10.9.0.0/16"))
			return err
		}, apiv1.ReasonInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if got := apiv1.ReasonOf(err); got != tc.wantReason {
				t.Fatalf("reason %q (err %v), want %q", got, err, tc.wantReason)
			}
		})
	}
	// Dependents are listed.
	_, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindVPC, Tenant: "acme", Name: "main"})
	se := err.(*apiv1.StatusError)
	if diff := cmp.Diff([]string{"subnet/acme/a"}, se.Dependents); diff != "" {
		t.Errorf("dependents (-want +got):\n%s", diff)
	}
}

func TestUpdateAndMigrate(t *testing.T) {
	r, st := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	out, err := r.Create(ctx, endpoint("acme", "vm", "a", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	ip := out.(*apiv1.Endpoint).Status.IP
	moved := endpoint("acme", "vm", "a", "h2")
	moved.Metadata.ResourceVersion = out.GetObjectMeta().ResourceVersion
	got, err := r.Update(ctx, moved)
	if err != nil {
		t.Fatal(err)
	}
	ep := got.(*apiv1.Endpoint)
	if ep.Status.Host != "h2" || ep.Status.IP != ip || ep.Metadata.Generation != 2 {
		t.Errorf("after migration: host %q ip %q gen %d; want h2, %s, 2", ep.Status.Host, ep.Status.IP, ep.Metadata.Generation, ip)
	}
	if n := len(st.EndpointsByHost("h1")); n != 0 {
		t.Errorf("h1 still has %d endpoints", n)
	}
	// h1 can now be deleted (its reference record moved), h2 cannot.
	if _, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}); err != nil {
		t.Errorf("delete h1 after migration: %v", err)
	}
	if _, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "h2"}); apiv1.ReasonOf(err) != apiv1.ReasonConflict {
		t.Errorf("delete h2: %v, want Conflict", err)
	}
	// Unchanged update writes nothing.
	same := endpoint("acme", "vm", "a", "h2")
	again, err := r.Update(ctx, same)
	if err != nil || again.GetObjectMeta().ResourceVersion != got.GetObjectMeta().ResourceVersion {
		t.Errorf("no-op update: rv %v err %v, want unchanged %s", again.GetObjectMeta().ResourceVersion, err, got.GetObjectMeta().ResourceVersion)
	}
	// Status update keeps spec.
	st2 := *ep
	st2.Status.Phase = apiv1.PhaseReady
	st2.Status.Netns = "/var/run/netns/x"
	st2.Spec.Host = "h1"        // ignored by UpdateStatus
	st2.Status.IP = "10.0.1.99" // allocated: kept
	upd, err := r.UpdateStatus(ctx, &st2)
	if err != nil {
		t.Fatal(err)
	}
	if e := upd.(*apiv1.Endpoint); e.Status.Phase != apiv1.PhaseReady || e.Spec.Host != "h2" || e.Status.IP != ip {
		t.Errorf("UpdateStatus: phase %q host %q ip %q", e.Status.Phase, e.Spec.Host, e.Status.IP)
	}
	// Delete frees the address for reuse and the subnet can then go.
	if _, err := r.Delete(ctx, apiv1.RefOf(ep)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Delete(ctx, apiv1.Ref{Kind: apiv1.KindSubnet, Tenant: "acme", Name: "a"}); err != nil {
		t.Errorf("delete empty subnet: %v", err)
	}
}

// TestConcurrentCreatesNeverDuplicate runs creates from many goroutines
// against one subnet and VPCs against one VNI space.
func TestConcurrentCreatesNeverDuplicate(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	mustCreate(t, r, subnet("acme", "big", "main", "10.0.64.0/18"))
	for i := 3; i <= 8; i++ {
		mustCreate(t, r, host(fmt.Sprintf("h%d", i), fmt.Sprintf("192.0.2.%d", i)))
	}
	const workers, per = 32, 40
	var mu sync.Mutex
	ips := map[string]string{}
	vnis := map[uint32]string{}
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				name := fmt.Sprintf("e-%d-%d", w, i)
				out, err := r.Create(ctx, endpoint("acme", name, "big", fmt.Sprintf("h%d", 1+(w+i)%8)))
				if err != nil {
					errs <- err
					continue
				}
				mu.Lock()
				ip := out.(*apiv1.Endpoint).Status.IP
				if other, dup := ips[ip]; dup {
					errs <- fmt.Errorf("ip %s given to %s and %s", ip, other, name)
				}
				ips[ip] = name
				mu.Unlock()
				if i%10 == 0 {
					vn := fmt.Sprintf("v-%d-%d", w, i)
					out, err := r.Create(ctx, vpc("globex", vn, "10.0.0.0/16"))
					if err != nil {
						errs <- err
						continue
					}
					mu.Lock()
					v := out.(*apiv1.VPC).Status.VNI
					if other, dup := vnis[v]; dup {
						errs <- fmt.Errorf("vni %d given to %s and %s", v, other, vn)
					}
					vnis[v] = vn
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(ips) != workers*per {
		t.Errorf("%d endpoints created, want %d", len(ips), workers*per)
	}
	p := netip.MustParsePrefix("10.0.64.0/18")
	for ip := range ips {
		if !p.Contains(netip.MustParseAddr(ip)) {
			t.Errorf("ip %s outside %s", ip, p)
		}
	}
}

// TestConcurrentOverlappingSubnets: of two overlapping subnets created at
// the same time, exactly one is stored.
func TestConcurrentOverlappingSubnets(t *testing.T) {
	r, st := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	for round := 0; round < 10; round++ {
		var wg sync.WaitGroup
		res := make([]error, 2)
		cidrs := []string{fmt.Sprintf("10.0.%d.0/24", 100+round), fmt.Sprintf("10.0.%d.128/25", 100+round)}
		for i := range 2 {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, res[i] = r.Create(ctx, subnet("acme", fmt.Sprintf("r%d-%d", round, i), "main", cidrs[i]))
			}(i)
		}
		wg.Wait()
		ok := 0
		for _, err := range res {
			if err == nil {
				ok++
			} else if apiv1.ReasonOf(err) != apiv1.ReasonInvalid {
				t.Errorf("round %d: unexpected error %v", round, err)
			}
		}
		if ok != 1 {
			t.Errorf("round %d: %d overlapping subnets stored, want exactly 1 (%v)", round, ok, res)
		}
	}
	var names []string
	for _, s := range st.SubnetsByVPC("acme", "main") {
		names = append(names, s.Metadata.Name)
	}
	sort.Strings(names)
	if len(names) != 11 {
		t.Errorf("subnets %v: want a + 10", names)
	}
}

// TestPatchStatusKeepsOtherWriters: two writers that own different status
// fields of one Host (liveness; the acknowledged view version) patch it
// concurrently; neither overwrites the other's field, a patch that changes
// nothing writes nothing, and allocated fields and the spec stay.
func TestPatchStatusKeepsOtherWriters(t *testing.T) {
	r, _ := newRegistry(t)
	base(t, r)
	ctx := context.Background()
	ref := apiv1.Ref{Kind: apiv1.KindHost, Name: "h1"}
	orig, err := r.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	var g errgroup.Group
	g.Go(func() error {
		for i := range n {
			_, err := r.PatchStatus(ctx, ref, func(o apiv1.Object) bool {
				o.(*apiv1.Host).Status.Liveness = fmt.Sprint("L", i)
				return true
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	g.Go(func() error {
		for i := range n {
			_, err := r.PatchStatus(ctx, ref, func(o apiv1.Object) bool {
				h := o.(*apiv1.Host)
				h.Status.ViewVersion = uint64(i + 1)
				h.Status.HostID = 999 // allocated: kept
				h.Spec.UnderlayIP = "203.0.113.1"
				return true
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	got, err := r.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	h, was := got.(*apiv1.Host), orig.(*apiv1.Host)
	if h.Status.Liveness != fmt.Sprint("L", n-1) || h.Status.ViewVersion != n {
		t.Errorf("status liveness %q view %d, want L%d and %d: a writer overwrote the other", h.Status.Liveness, h.Status.ViewVersion, n-1, n)
	}
	if h.Status.HostID != was.Status.HostID || h.Spec.UnderlayIP != was.Spec.UnderlayIP {
		t.Errorf("host ID %d underlay %s, want the allocated %d and the spec's %s", h.Status.HostID, h.Spec.UnderlayIP, was.Status.HostID, was.Spec.UnderlayIP)
	}
	same, err := r.PatchStatus(ctx, ref, func(apiv1.Object) bool { return false })
	if err != nil || same.GetObjectMeta().ResourceVersion != h.Metadata.ResourceVersion {
		t.Errorf("no-op patch: rv %s err %v, want unchanged %s", same.GetObjectMeta().ResourceVersion, err, h.Metadata.ResourceVersion)
	}
	if _, err := r.PatchStatus(ctx, apiv1.Ref{Kind: apiv1.KindHost, Name: "nope"}, func(apiv1.Object) bool { return true }); apiv1.ReasonOf(err) != apiv1.ReasonNotFound {
		t.Errorf("patch of a missing host: %v, want NotFound", err)
	}
}
