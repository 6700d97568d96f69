package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// TestCrashKeepsAcknowledgedWrites kills the controller with SIGKILL in the
// middle of concurrent creates, restarts it on the same data directory and
// checks that every acknowledged endpoint and VPC is there and that no
// address or VNI was handed out twice, before or after the restart.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	ctl := startController(t, dir, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := ctl.client()
	setup := []apiv1.Object{
		&apiv1.Tenant{TypeMeta: tm(apiv1.KindTenant), Metadata: apiv1.ObjectMeta{Name: "t"}},
		&apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "v", Tenant: "t"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}},
		&apiv1.Subnet{TypeMeta: tm(apiv1.KindSubnet), Metadata: apiv1.ObjectMeta{Name: "s", Tenant: "t"}, Spec: apiv1.SubnetSpec{VPC: "v", CIDR: "10.0.0.0/20"}},
	}
	for i := 0; i < 8; i++ {
		setup = append(setup, &apiv1.Host{TypeMeta: tm(apiv1.KindHost), Metadata: apiv1.ObjectMeta{Name: fmt.Sprintf("h%d", i)}, Spec: apiv1.HostSpec{UnderlayIP: fmt.Sprintf("192.0.2.%d", i+1)}})
	}
	for _, o := range setup {
		if _, err := cl.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", apiv1.RefOf(o), err)
		}
	}

	var mu sync.Mutex
	ackedEP := map[string]string{} // name → ip
	ackedVPC := map[string]uint32{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if w == 0 {
					name := fmt.Sprintf("vpc-%d", i)
					out, err := cl.Create(ctx, &apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: name, Tenant: "t"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}})
					if err == nil {
						mu.Lock()
						ackedVPC[name] = out.(*apiv1.VPC).Status.VNI
						mu.Unlock()
					}
					continue
				}
				name := fmt.Sprintf("ep-%d-%d", w, i)
				out, err := cl.Create(ctx, &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: name, Tenant: "t"}, Spec: apiv1.EndpointSpec{Subnet: "s", Host: fmt.Sprintf("h%d", w%8)}})
				if err == nil {
					mu.Lock()
					ackedEP[name] = out.(*apiv1.Endpoint).Status.IP
					mu.Unlock()
				}
			}
		}(w)
	}
	// Let writes flow, then crash the controller mid-stream.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(ackedEP)
		mu.Unlock()
		if n >= 500 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctl.kill()
	close(stop)
	wg.Wait()
	mu.Lock()
	if len(ackedEP) < 50 {
		t.Fatalf("only %d endpoints acknowledged before the crash; the test needs load", len(ackedEP))
	}
	t.Logf("acknowledged before kill -9: %d endpoints, %d VPCs", len(ackedEP), len(ackedVPC))
	mu.Unlock()

	ctl2 := startController(t, dir, addr)
	cl2 := ctl2.client()
	// After the restart, allocation continues without reusing anything.
	for i := 0; i < 100; i++ {
		name := fmt.Sprintf("after-%d", i)
		out, err := cl2.Create(ctx, &apiv1.Endpoint{TypeMeta: tm(apiv1.KindEndpoint), Metadata: apiv1.ObjectMeta{Name: name, Tenant: "t"}, Spec: apiv1.EndpointSpec{Subnet: "s", Host: fmt.Sprintf("h%d", i%8)}})
		if err != nil {
			t.Fatalf("create after restart: %v", err)
		}
		ackedEP[name] = out.(*apiv1.Endpoint).Status.IP
	}
	out, err := cl2.Create(ctx, &apiv1.VPC{TypeMeta: tm(apiv1.KindVPC), Metadata: apiv1.ObjectMeta{Name: "after", Tenant: "t"}, Spec: apiv1.VPCSpec{CIDRs: []string{"10.0.0.0/16"}}})
	if err != nil {
		t.Fatalf("create VPC after restart: %v", err)
	}
	ackedVPC["after"] = out.(*apiv1.VPC).Status.VNI

	eps, _, err := cl2.List(ctx, apiv1.KindEndpoint, "t", "")
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]string{}
	byIP := map[string]string{}
	for _, o := range eps {
		ep := o.(*apiv1.Endpoint)
		stored[ep.Metadata.Name] = ep.Status.IP
		if other, dup := byIP[ep.Status.IP]; dup {
			t.Errorf("address %s stored for both %s and %s", ep.Status.IP, other, ep.Metadata.Name)
		}
		byIP[ep.Status.IP] = ep.Metadata.Name
	}
	for name, ip := range ackedEP {
		got, ok := stored[name]
		if !ok {
			t.Errorf("acknowledged endpoint %s lost", name)
		} else if got != ip {
			t.Errorf("endpoint %s: acknowledged ip %s, stored %s", name, ip, got)
		}
	}
	vpcs, _, err := cl2.List(ctx, apiv1.KindVPC, "t", "")
	if err != nil {
		t.Fatal(err)
	}
	byVNI := map[uint32]string{}
	storedVPC := map[string]uint32{}
	for _, o := range vpcs {
		v := o.(*apiv1.VPC)
		storedVPC[v.Metadata.Name] = v.Status.VNI
		if other, dup := byVNI[v.Status.VNI]; dup {
			t.Errorf("VNI %d stored for both %s and %s", v.Status.VNI, other, v.Metadata.Name)
		}
		byVNI[v.Status.VNI] = v.Metadata.Name
	}
	for name, vni := range ackedVPC {
		if got, ok := storedVPC[name]; !ok || got != vni {
			t.Errorf("acknowledged VPC %s (vni %d): stored %d, present %v", name, vni, got, ok)
		}
	}
	ctl2.stop()
}

func tm(kind string) apiv1.TypeMeta { return apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: kind} }
