package e2e

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/agent/cniserver"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/demo"
	"github.com/weftnet/weft/internal/testnet"
)

// cniDoc is the tenant the CNI tests attach containers to.
const cniDoc = `apiVersion: weft/v1
kind: Tenant
metadata: {name: acme}
---
apiVersion: weft/v1
kind: VPC
metadata: {name: main, tenant: acme}
spec: {cidrs: [10.20.0.0/16]}
---
apiVersion: weft/v1
kind: Subnet
metadata: {name: pods, tenant: acme}
spec: {vpc: main, cidr: 10.20.0.0/20}
---
apiVersion: weft/v1
kind: QoSClass
metadata: {name: slow, tenant: acme}
spec: {maxRate: 100Mbit}
`

// cniBinaries builds weft-cni and the upstream cnitool once.
var cniBinaries = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "weft-e2e-cni-")
	if err != nil {
		return "", err
	}
	for _, pkg := range []string{"github.com/weftnet/weft/cmd/weft-cni", "github.com/containernetworking/cni/cnitool"} {
		out, err := exec.Command("go", "build", "-o", dir, pkg).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir, nil
})

// cniEnv is a lab of two hosts whose agents serve CNI, with a network
// configuration per host.
type cniEnv struct {
	*dpEnv
	bin     string            // weft-cni and cnitool
	sockets map[string]string // by host
	confDir map[string]string // NETCONFPATH of each host
	cache   string            // libcni's cache
}

func newCNIEnv(t *testing.T, agentFlags ...string) *cniEnv {
	t.Helper()
	bin, err := cniBinaries()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock := func(host string) string { return filepath.Join(dir, host+".sock") }
	e := &cniEnv{bin: bin, sockets: map[string]string{}, confDir: map[string]string{}, cache: filepath.Join(dir, "cache")}
	e.dpEnv = newLabEnv(t, []byte(cniDoc), demo.DatapathLinux, 2, func(host string) []string {
		return append([]string{"--cni-socket", sock(host), "--cni-subnet", "acme/pods"}, agentFlags...)
	})
	for _, h := range e.lab.Hosts() {
		e.sockets[h.Name] = sock(h.Name)
		e.confDir[h.Name] = filepath.Join(dir, "conf-"+h.Name)
		if err := os.MkdirAll(e.confDir[h.Name], 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.confDir[h.Name], "weft.conflist"), e.confList(h.Name), 0o644); err != nil {
			t.Fatal(err)
		}
		e.waitServing(h.Name)
	}
	return e
}

// confList is the network configuration list of host: network "weft",
// subnet acme/pods (the agent's default) in VPC main, label app=ctr, DNS
// and the capabilities.
func (e *cniEnv) confList(host string) []byte { return e.conf(host, true) }

// conf is confList, without the VPC and the label unless selective: then
// it selects exactly the agent's default.
func (e *cniEnv) conf(host string, selective bool) []byte {
	plugin := map[string]any{
		"type": "weft-cni", "agentSocket": e.sockets[host],
		"dns":          map[string]any{"nameservers": []string{"10.20.0.2"}, "search": []string{"acme.internal"}},
		"capabilities": map[string]bool{"ips": true, "mac": true, "bandwidth": true, "io.kubernetes.cri.pod-annotations": true},
	}
	if selective {
		plugin["vpc"], plugin["labels"] = "main", map[string]string{"app": "ctr"}
	}
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "weft", "plugins": []map[string]any{plugin}})
	return b
}

func (e *cniEnv) list(host string) *libcni.NetworkConfigList { return e.parseList(e.confList(host)) }

// defaultList is the list that selects the agent's default.
func (e *cniEnv) defaultList(host string) *libcni.NetworkConfigList {
	return e.parseList(e.conf(host, false))
}

func (e *cniEnv) parseList(b []byte) *libcni.NetworkConfigList {
	e.t.Helper()
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// libcni returns a libcni client of the plugins. Its exec is given:
// CNIConfig sets a missing one on first use, which races when goroutines
// share the client.
func (e *cniEnv) libcni() *libcni.CNIConfig {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return libcni.NewCNIConfigWithCacheDir([]string{e.bin}, e.cache, exec)
}

// calls counts the plugin connections the agent of host has accepted
// and not closed: the unix sockets bound to the CNI socket's path, but the
// listener. The listener is in the agent's namespace, an accepted socket
// in the plugin's (this process's).
func (e *cniEnv) calls(host string) int {
	e.t.Helper()
	inodes := map[string]bool{}
	for _, f := range []string{fmt.Sprintf("/proc/%d/net/unix", e.agents[host].Pid()), "/proc/self/net/unix"} {
		b, err := os.ReadFile(f)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 8 && f[7] == e.sockets[host] {
				inodes[f[6]] = true
			}
		}
	}
	return len(inodes) - 1
}

// waitServing waits until the agent of host answers STATUS.
func (e *cniEnv) waitServing(host string) {
	e.t.Helper()
	eventually(e.t, 60*time.Second, "the CNI server of "+host+" answers STATUS", func() (bool, string) {
		err := e.libcni().GetStatusNetworkList(context.Background(), e.list(host))
		return err == nil, fmt.Sprint(err)
	})
}

// netns makes a container namespace, as a runtime would.
func (e *cniEnv) netns(name string) string {
	e.t.Helper()
	p, err := e.lab.AddNetns(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// cnitool runs the upstream cnitool against host's configuration.
func (e *cniEnv) cnitool(host string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(e.bin, "cnitool"), args...)
	cmd.Env = append(os.Environ(), "CNI_PATH="+e.bin, "NETCONFPATH="+e.confDir[host])
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// endpoint returns the endpoint of an attachment, nil if there is none.
func (e *cniEnv) endpoint(containerID, ifName string) *apiv1.Endpoint {
	e.t.Helper()
	eps, err := e.endpoints()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ep := range eps {
		an := ep.Metadata.Annotations
		if an[cniserver.AnnotationContainerID] == containerID && an[cniserver.AnnotationIfName] == ifName {
			return ep
		}
	}
	return nil
}

// checkResult verifies a result: one interface in the namespace, an
// address of acme/pods with its gateway, a default route, the DNS.
func checkResult(t *testing.T, r types.Result, netns, ifName string) *types100.Result {
	t.Helper()
	res, err := types100.GetResult(r)
	if err != nil {
		t.Fatalf("result: %v", err)
	}
	if len(res.Interfaces) != 1 || res.Interfaces[0].Name != ifName || res.Interfaces[0].Sandbox != netns || res.Interfaces[0].Mac == "" {
		t.Errorf("result interfaces: %v", res.Interfaces)
	}
	pods := netip.MustParsePrefix("10.20.0.0/20")
	if len(res.IPs) != 1 || res.IPs[0].Address.String() == "" || res.IPs[0].Gateway.String() != "10.20.0.1" {
		t.Fatalf("result IPs: %v", res.IPs)
	}
	if a, ok := netip.AddrFromSlice(res.IPs[0].Address.IP); !ok || !pods.Contains(a.Unmap()) {
		t.Errorf("address %s is not in %s", res.IPs[0].Address.String(), pods)
	}
	if ones, _ := res.IPs[0].Address.Mask.Size(); ones != 20 {
		t.Errorf("address %s: want the subnet's /20", res.IPs[0].Address.String())
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || res.Routes[0].GW.String() != "10.20.0.1" {
		t.Errorf("result routes: %v", res.Routes)
	}
	if len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != "10.20.0.2" {
		t.Errorf("result DNS: %+v", res.DNS)
	}
	return res
}

// TestCNI attaches containers through the weft-cni plugin, with the
// upstream cnitool and with libcni, against real agents and a real
// controller: ADD, CHECK, DEL, GC, STATUS, their idempotence, traffic
// between containers on two hosts, 200 concurrent ADDs on one host, and an
// agent killed in the middle of an ADD.
func TestCNI(t *testing.T) {
	e := newCNIEnv(t)
	ctx := t.Context()

	t.Run("cnitool", func(t *testing.T) {
		a, b := e.netns("ctr-a"), e.netns("ctr-b")
		out, err := e.cnitool("h1", "add", "weft", a)
		if err != nil {
			t.Fatalf("cnitool add: %v\n%s", err, out)
		}
		r, err := types100.NewResult([]byte(out))
		if err != nil {
			t.Fatalf("cnitool add printed %q: %v", out, err)
		}
		ra := checkResult(t, r, a, "eth0")
		// The API says Ready, with the container's ID, on h1.
		ep := e.endpoint(cnitoolID(a), "eth0")
		if ep == nil || ep.Status.Phase != apiv1.PhaseReady || ep.Spec.Host != "h1" || ep.Spec.Netns != a {
			t.Fatalf("endpoint after ADD: %+v", ep)
		}
		if ep.Metadata.Labels["app"] != "ctr" || len(ep.Metadata.OwnerReferences) != 1 || ep.Metadata.OwnerReferences[0].Name != "h1" {
			t.Errorf("endpoint metadata: %+v", ep.Metadata)
		}
		// ADD twice: the same attachment.
		out2, err := e.cnitool("h1", "add", "weft", a)
		if err != nil {
			t.Fatalf("second cnitool add: %v\n%s", err, out2)
		}
		r2, _ := types100.NewResult([]byte(out2))
		if got := checkResult(t, r2, a, "eth0"); got.IPs[0].Address.String() != ra.IPs[0].Address.String() {
			t.Errorf("second ADD gave %s, the first %s", got.IPs[0].Address.String(), ra.IPs[0].Address.String())
		}
		if out, err := e.cnitool("h1", "check", "weft", a); err != nil {
			t.Errorf("cnitool check: %v\n%s", err, out)
		}
		out, err = e.cnitool("h2", "add", "weft", b)
		if err != nil {
			t.Fatalf("cnitool add on h2: %v\n%s", err, out)
		}
		r, _ = types100.NewResult([]byte(out))
		rb := checkResult(t, r, b, "eth0")
		// Containers on two hosts reach each other.
		for _, p := range []struct {
			from string
			to   *types100.Result
		}{{a, rb}, {b, ra}} {
			to, _ := netip.AddrFromSlice(p.to.IPs[0].Address.IP)
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if _, err := testnet.Ping(pctx, p.from, to.Unmap()); err != nil {
				t.Errorf("ping %s from %s: %v", to, p.from, err)
			}
			cancel()
		}
		// DEL, DEL again, and DEL of what was never added.
		for i, ns := range []string{a, a, e.netns("ctr-never")} {
			if out, err := e.cnitool("h1", "del", "weft", ns); err != nil {
				t.Errorf("cnitool del #%d: %v\n%s", i, err, out)
			}
		}
		if ep := e.endpoint(cnitoolID(a), "eth0"); ep != nil {
			t.Errorf("endpoint still there after DEL: %s", epID(ep))
		}
		if out, err := e.cnitool("h1", "check", "weft", a); err == nil {
			t.Errorf("cnitool check after DEL succeeded: %s", out)
		}
		// cnitool gc names no valid attachment: b's goes.
		if out, err := e.cnitool("h2", "gc", "weft", b); err != nil {
			t.Errorf("cnitool gc: %v\n%s", err, out)
		}
		if ep := e.endpoint(cnitoolID(b), "eth0"); ep != nil {
			t.Errorf("endpoint still there after GC: %s", epID(ep))
		}
	})

	t.Run("libcni", func(t *testing.T) {
		cn, l := e.libcni(), e.list("h1")
		// VERSION, answered by the plugin itself.
		if vi, err := cn.GetVersionInfo(ctx, "weft-cni"); err != nil || !slices.Contains(vi.SupportedVersions(), "1.1.0") {
			t.Errorf("VERSION: %v, %v; want 1.1.0 among the versions", vi, err)
		}
		rts := make([]*libcni.RuntimeConf, 3)
		for i := range rts {
			ns := e.netns(fmt.Sprintf("lib-%d", i))
			rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("lib-%d", i), NetNS: ns, IfName: "net1",
				Args:           [][2]string{{"K8S_POD_NAME", fmt.Sprintf("pod-%d", i)}},
				CapabilityArgs: map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"example.com/team": "blue"}}}
		}
		rts[1].CapabilityArgs["ips"] = []string{"10.20.15.7/20"}
		rts[1].CapabilityArgs["mac"] = "02:00:00:aa:bb:cc"
		rts[2].CapabilityArgs["bandwidth"] = map[string]any{"ingressRate": 200_000_000, "egressRate": 150_000_000}
		for i, rt := range rts {
			r, err := cn.AddNetworkList(ctx, l, rt)
			if err != nil {
				t.Fatalf("AddNetworkList %d: %v", i, err)
			}
			checkResult(t, r, rt.NetNS, "net1")
			if err := cn.CheckNetworkList(ctx, l, rt); err != nil {
				t.Errorf("CheckNetworkList %d: %v", i, err)
			}
		}
		if ep := e.endpoint("lib-0", "net1"); ep == nil || ep.Metadata.Annotations["cni-args.weft.io/K8S_POD_NAME"] != "pod-0" ||
			ep.Metadata.Annotations["example.com/team"] != "blue" {
			t.Errorf("runtime args and pod annotations not on the endpoint: %+v", ep)
		}
		if ep := e.endpoint("lib-1", "net1"); ep == nil || ep.Status.IP != "10.20.15.7" || ep.Status.MAC != "02:00:00:aa:bb:cc" {
			t.Errorf("ips and mac capabilities not honoured: %+v", ep)
		}
		if ep := e.endpoint("lib-2", "net1"); ep == nil || ep.Spec.QoSClass != "slow" {
			t.Errorf("bandwidth not mapped to class slow: %+v", ep)
		}
		// A rate no class fits is refused, and leaves nothing.
		bad := &libcni.RuntimeConf{ContainerID: "lib-bad", NetNS: e.netns("lib-bad"), IfName: "net1",
			CapabilityArgs: map[string]any{"bandwidth": map[string]any{"ingressRate": 1000, "egressRate": 1000}}}
		if _, err := cn.AddNetworkList(ctx, l, bad); err == nil || !strings.Contains(err.Error(), "no QoS class") {
			t.Errorf("ADD with 1000 bit/s: %v, want a refusal naming the classes", err)
		}
		if ep := e.endpoint("lib-bad", "net1"); ep != nil {
			t.Errorf("refused ADD left endpoint %s", epID(ep))
		}
		// GC keeps the valid attachments and deletes the others.
		valid := []types.GCAttachment{{ContainerID: "lib-0", IfName: "net1"}, {ContainerID: "lib-1", IfName: "net1"}}
		if err := cn.GCNetworkList(ctx, l, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
			t.Fatalf("GCNetworkList: %v", err)
		}
		if e.endpoint("lib-0", "net1") == nil || e.endpoint("lib-1", "net1") == nil || e.endpoint("lib-2", "net1") != nil {
			t.Errorf("after GC: lib-0 %v, lib-1 %v, lib-2 %v", e.endpoint("lib-0", "net1") != nil, e.endpoint("lib-1", "net1") != nil, e.endpoint("lib-2", "net1") != nil)
		}
		for _, rt := range rts[:2] {
			if err := cn.DelNetworkList(ctx, l, rt); err != nil {
				t.Errorf("DelNetworkList %s: %v", rt.ContainerID, err)
			}
		}
	})

	t.Run("200 concurrent ADDs on one host", func(t *testing.T) {
		const n = 200
		cn, l := e.libcni(), e.list("h1")
		rts := make([]*libcni.RuntimeConf, n)
		for i := range rts {
			rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("many-%d", i), NetNS: e.netns(fmt.Sprintf("many-%d", i)), IfName: "eth0"}
		}
		start := time.Now()
		addrs := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, rt := range rts {
			wg.Go(func() {
				r, err := cn.AddNetworkList(ctx, l, rt)
				if err == nil {
					addrs[i] = checkResult(t, r, rt.NetNS, "eth0").IPs[0].Address.IP.String()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		t.Logf("%d concurrent ADDs on one host took %v", n, time.Since(start))
		seen := map[string]bool{}
		for i, err := range errs {
			if err != nil {
				t.Errorf("ADD %d: %v", i, err)
			} else if seen[addrs[i]] {
				t.Errorf("address %s given twice", addrs[i])
			}
			seen[addrs[i]] = true
		}
		for i, rt := range rts {
			wg.Go(func() {
				if err := cn.DelNetworkList(ctx, l, rt); err != nil {
					t.Errorf("DEL %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if eps, _ := e.endpoints(); len(eps) != 0 {
			t.Errorf("%d endpoints left after DEL of all", len(eps))
		}
	})

	t.Run("agent killed during ADD", func(t *testing.T) {
		cn, l := e.libcni(), e.list("h1")
		rt := &libcni.RuntimeConf{ContainerID: "crash", NetNS: e.netns("crash"), IfName: "eth0"}
		// The controller stopped, the ADD is stuck in the agent's create
		// (or its wait) when the agent dies.
		ctl := e.ctl.cmd.Process
		if err := ctl.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				_ = ctl.Signal(syscall.SIGCONT)
			}
		}
		defer resume()
		done := make(chan error, 1)
		go func() {
			_, err := cn.AddNetworkList(ctx, l, rt)
			done <- err
		}()
		eventually(t, 30*time.Second, "the plugin's call accepted by the agent", func() (bool, string) {
			n := e.calls("h1")
			return n > 0, fmt.Sprint(n, " calls")
		})
		e.agents["h1"].Kill()
		resume()
		if err := <-done; err == nil {
			t.Error("the ADD succeeded with its agent killed")
		} else {
			t.Logf("ADD with the agent killed: %v", err)
		}
		e.startAgent("h1")
		e.waitServing("h1")
		r, err := cn.AddNetworkList(ctx, l, rt)
		if err != nil {
			t.Fatalf("ADD retried after the restart: %v", err)
		}
		checkResult(t, r, rt.NetNS, "eth0")
		if err := cn.CheckNetworkList(ctx, l, rt); err != nil {
			t.Errorf("CHECK after the retry: %v", err)
		}
		// DEL after another restart.
		e.agents["h1"].Kill()
		e.startAgent("h1")
		e.waitServing("h1")
		if err := cn.DelNetworkList(ctx, l, rt); err != nil {
			t.Errorf("DEL after a restart: %v", err)
		}
		if ep := e.endpoint("crash", "eth0"); ep != nil {
			t.Errorf("endpoint left after DEL: %s", epID(ep))
		}
	})
}

// cnitoolID is the container ID cnitool gives an attachment of netns: a
// hash of its path (cnitool's setupRuntimeConfig).
func cnitoolID(netns string) string {
	h := sha512.Sum512([]byte(netns))
	return fmt.Sprintf("cnitool-%x", h[:10])
}

// poolEndpoints returns the unclaimed warm-pool endpoints on host.
func (e *cniEnv) poolEndpoints(host string) []*apiv1.Endpoint {
	e.t.Helper()
	eps, err := e.endpoints()
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*apiv1.Endpoint
	for _, ep := range eps {
		an := ep.Metadata.Annotations
		if ep.Spec.Host == host && an[cniserver.AnnotationPool] != "" && an[cniserver.AnnotationContainerID] == "" {
			out = append(out, ep)
		}
	}
	return out
}

// waitPool waits until host's pool holds at least n endpoints its agent
// reported Pending (reserved, waiting to be attached), and returns them.
func (e *cniEnv) waitPool(host string, n int) []*apiv1.Endpoint {
	e.t.Helper()
	var eps []*apiv1.Endpoint
	eventually(e.t, 60*time.Second, fmt.Sprintf("%d pool endpoints Pending on %s", n, host), func() (bool, string) {
		eps = e.poolEndpoints(host)
		pending := 0
		var s []string
		for _, ep := range eps {
			s = append(s, ep.Metadata.Name+"="+ep.Status.Phase)
			if ep.Status.Phase == apiv1.PhasePending && strings.HasPrefix(ep.Status.Message, "waiting for a network namespace") {
				pending++
			}
		}
		return pending >= n, fmt.Sprint(s)
	})
	return eps
}

// TestCNIWarmPool attaches containers to the warm pool's endpoints: an
// ADD claims a reserved endpoint (its address and name stay), traffic
// flows, DEL deletes it and unpins the namespace, GC collects claimed ones,
// and a restarted agent adopts its pool.
func TestCNIWarmPool(t *testing.T) {
	e := newCNIEnv(t, "--cni-pool", "6", "--cni-pool-min", "3")
	ctx := t.Context()
	cn := e.libcni()
	pool := e.waitPool("h1", 3)
	reserved := map[string]string{} // name -> address
	for _, ep := range pool {
		reserved[ep.Metadata.Name] = ep.Status.IP
	}

	a, b := e.netns("pool-a"), e.netns("pool-b")
	rtA := &libcni.RuntimeConf{ContainerID: "pool-a", NetNS: a, IfName: "eth0"}
	r, err := cn.AddNetworkList(ctx, e.defaultList("h1"), rtA)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res := checkResult(t, r, a, "eth0")
	ep := e.endpoint("pool-a", "eth0")
	switch {
	case ep == nil:
		t.Fatal("no endpoint records the attachment")
	case reserved[ep.Metadata.Name] == "":
		for _, p := range e.poolEndpoints("h1") {
			t.Logf("pool endpoint %s: %s %q netns %s conditions %+v", p.Metadata.Name, p.Status.Phase, p.Status.Message, p.Status.Netns, p.Status.Conditions)
		}
		t.Errorf("ADD did not take a pool endpoint: %s", ep.Metadata.Name)
	case reserved[ep.Metadata.Name] != ep.Status.IP || res.IPs[0].Address.IP.String() != ep.Status.IP:
		t.Errorf("claimed %s: address %s, reserved %s, result %s", ep.Metadata.Name, ep.Status.IP, reserved[ep.Metadata.Name], res.IPs[0].Address.String())
	case ep.Status.Phase != apiv1.PhaseReady || ep.Metadata.Annotations[cniserver.AnnotationNetns] != a:
		t.Errorf("claimed endpoint: phase %s, annotations %v", ep.Status.Phase, ep.Metadata.Annotations)
	}
	if err := cn.CheckNetworkList(ctx, e.defaultList("h1"), rtA); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// ADD twice: the same endpoint.
	if _, err := cn.AddNetworkList(ctx, e.defaultList("h1"), rtA); err != nil {
		t.Errorf("second ADD: %v", err)
	} else if again := e.endpoint("pool-a", "eth0"); again == nil || again.Metadata.UID != ep.Metadata.UID {
		t.Errorf("second ADD changed the endpoint")
	}
	rB, err := cn.AddNetworkList(ctx, e.list("h2"), &libcni.RuntimeConf{ContainerID: "pool-b", NetNS: b, IfName: "eth0"})
	if err != nil {
		t.Fatalf("ADD on h2: %v", err)
	}
	to, _ := netip.AddrFromSlice(checkResult(t, rB, b, "eth0").IPs[0].Address.IP)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if _, err := testnet.Ping(pctx, a, to.Unmap()); err != nil {
		t.Errorf("ping from the pool-attached container: %v", err)
	}
	cancel()
	// The pool refills.
	e.waitPool("h1", 3)

	// Killed and restarted, the agent adopts its pool and its claims.
	e.agents["h1"].Kill()
	e.startAgent("h1")
	e.waitServing("h1")
	if err := cn.CheckNetworkList(ctx, e.defaultList("h1"), rtA); err != nil {
		t.Errorf("CHECK after a restart: %v", err)
	}
	rtC := &libcni.RuntimeConf{ContainerID: "pool-c", NetNS: e.netns("pool-c"), IfName: "eth0"}
	if _, err := cn.AddNetworkList(ctx, e.defaultList("h1"), rtC); err != nil {
		t.Fatalf("ADD after a restart: %v", err)
	}
	if c := e.endpoint("pool-c", "eth0"); c == nil || c.Metadata.Annotations[cniserver.AnnotationPool] == "" {
		t.Errorf("ADD after a restart did not claim from the adopted pool: %+v", c)
	}

	// DEL deletes the endpoint and unpins the container's namespace; GC
	// collects the others.
	if err := cn.DelNetworkList(ctx, e.defaultList("h1"), rtA); err != nil {
		t.Errorf("DEL: %v", err)
	}
	if got := e.endpoint("pool-a", "eth0"); got != nil {
		t.Errorf("endpoint left after DEL: %s", epID(got))
	}
	if isMount(t, ep.Spec.Netns) {
		t.Errorf("pin %s still holds a namespace after DEL", ep.Spec.Netns)
	}
	// The pool's unclaimed endpoints are no attachments: GC keeps them.
	before := map[string]bool{}
	for _, p := range e.poolEndpoints("h1") {
		before[p.Metadata.Name] = true
	}
	if err := cn.GCNetworkList(ctx, e.defaultList("h1"), &libcni.GCArgs{}); err != nil {
		t.Errorf("GC: %v", err)
	}
	if c := e.endpoint("pool-c", "eth0"); c != nil {
		t.Errorf("GC left %s", epID(c))
	}
	for _, p := range e.poolEndpoints("h1") {
		delete(before, p.Metadata.Name)
	}
	if len(before) > 0 || len(e.poolEndpoints("h1")) == 0 {
		t.Errorf("GC took pool endpoints: %v gone", before)
	}
}

// isMount reports whether path is a namespace pin (a bind mount of one).
func isMount(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), " "+path+" ")
}
