package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/agent/cniserver"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/demo"
	"github.com/weftnet/weft/internal/netnsfile"
	"github.com/weftnet/weft/internal/testnet"
	"github.com/weftnet/weft/internal/testnet/nettest"
)

// The systemd units in deploy/ are checked here as far as a machine whose
// PID 1 is not systemd allows: their processes run under setpriv(1) with
// the user change, the capabilities and the no_new_privs that the units
// give them, read from the unit files. (systemd-analyze verify checks
// their syntax in CI.) Seccomp and mount options are not reproduced.

// unitPrivileges is what a unit's [Service] section grants its process.
type unitPrivileges struct {
	user       string   // User=; "" runs as root
	group      string   // Group=
	ambient    []string // AmbientCapabilities=, as setpriv names them (net_admin)
	bounding   []string // CapabilityBoundingSet=
	noNewPrivs bool
	execPre    [][]string // ExecStartPre= command lines
}

// readUnit reads the privileges of deploy/name.
func readUnit(t *testing.T, name string) unitPrivileges {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		u       unitPrivileges
		section string
		line    string
	)
	caps := func(v string) []string {
		var out []string
		for _, c := range strings.Fields(v) {
			out = append(out, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		}
		slices.Sort(out)
		return out
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		s := strings.TrimSpace(sc.Text())
		if c, ok := strings.CutSuffix(s, `\`); ok {
			line += c + " "
			continue
		}
		line, s = "", line+s
		if s == "" || s[0] == '#' || s[0] == ';' {
			continue
		}
		if s[0] == '[' {
			section = s
			continue
		}
		k, v, _ := strings.Cut(s, "=")
		if section != "[Service]" {
			continue
		}
		switch k {
		case "User":
			u.user = v
		case "Group":
			u.group = v
		case "AmbientCapabilities":
			u.ambient = caps(v)
		case "CapabilityBoundingSet":
			u.bounding = caps(v)
		case "NoNewPrivileges":
			u.noNewPrivs = v == "yes" || v == "true"
		case "ExecStartPre":
			u.execPre = append(u.execPre, strings.Fields(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// unitUser stands in for a unit's user on this machine: an unused uid,
// with a group of the same number.
type unitUser struct{ uid, gid int }

func newUnitUser(t *testing.T) unitUser {
	t.Helper()
	for id := 61000; id < 62000; id++ {
		_, uerr := user.LookupId(strconv.Itoa(id))
		_, gerr := user.LookupGroupId(strconv.Itoa(id))
		if uerr != nil && gerr != nil {
			return unitUser{uid: id, gid: id}
		}
	}
	t.Fatal("no unused uid in 61000-61999")
	return unitUser{}
}

// dir makes a directory owned by the user (mode 0700) under a fresh
// directory that every user can traverse.
func (uu unitUser) dir(t *testing.T) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "weft-unit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(parent, "home")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, uu.uid, uu.gid); err != nil {
		t.Fatal(err)
	}
	return d
}

// runExecPre runs the unit's ExecStartPre= commands (all of them run with
// full privileges, "+"), its group replaced by the user's.
func (u unitPrivileges) runExecPre(t *testing.T, uu unitUser) {
	t.Helper()
	for _, argv := range u.execPre {
		argv = slices.Clone(argv)
		if !strings.HasPrefix(argv[0], "+") {
			t.Fatalf("ExecStartPre=%s: the test runs only commands with full privileges (+)", strings.Join(argv, " "))
		}
		argv[0] = strings.TrimPrefix(argv[0], "+")
		for i, a := range argv {
			if a == u.group {
				argv[i] = strconv.Itoa(uu.gid)
			}
		}
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("ExecStartPre=%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
}

// command writes an executable that runs the weft binary with the unit's
// privileges, as the user uu, and returns its path. The process keeps
// its pid through both execs.
func (u unitPrivileges) command(t *testing.T, uu unitUser) string {
	t.Helper()
	args := []string{"exec", "setpriv"}
	if u.user != "" && u.user != "root" {
		args = append(args, fmt.Sprintf("--reuid=%d", uu.uid), fmt.Sprintf("--regid=%d", uu.gid), "--clear-groups")
	}
	list := func(caps []string) string { return strings.Join(append([]string{"-all"}, prefixed("+", caps)...), ",") }
	args = append(args, "--inh-caps="+list(u.ambient), "--ambient-caps="+list(u.ambient), "--bounding-set="+list(u.bounding))
	if u.noNewPrivs {
		args = append(args, "--no-new-privs")
	}
	// The agent dies with the test (the user change cleared Pdeathsig).
	args = append(args, "--pdeathsig=KILL", "--", binary(t), `"$@"`)
	path := filepath.Join(t.TempDir(), "weft-as-unit")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+strings.Join(args, " ")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func prefixed(p string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = p + s
	}
	return out
}

// capNames are the capabilities by number (linux/capability.h).
var capNames = strings.Fields(`chown dac_override dac_read_search fowner fsetid kill setgid setuid
	setpcap linux_immutable net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner
	sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin sys_boot sys_nice sys_resource
	sys_time sys_tty_config mknod lease audit_write audit_control setfcap mac_override mac_admin
	syslog wake_alarm block_suspend audit_read perfmon bpf checkpoint_restore`)

// procPrivileges reads what process pid runs with: its uid, its
// effective, permitted, ambient and bounding capabilities and
// no_new_privs, as one line per item.
func procPrivileges(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Uid":
			out[k] = strings.Join(strings.Fields(v), " ")
		case "NoNewPrivs":
			out[k] = v
		case "CapEff", "CapPrm", "CapAmb", "CapBnd":
			mask, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			var names []string
			for i := range 64 {
				if mask&(1<<i) == 0 {
					continue
				}
				if i < len(capNames) {
					names = append(names, capNames[i])
				} else {
					names = append(names, strconv.Itoa(i))
				}
			}
			slices.Sort(names)
			out[k] = strings.Join(names, ",")
		}
	}
	return out
}

// wantPrivileges is what procPrivileges reports for a process of the unit.
func (u unitPrivileges) wantPrivileges(uu unitUser) map[string]string {
	nnp := "0"
	if u.noNewPrivs {
		nnp = "1"
	}
	amb := strings.Join(u.ambient, ",")
	return map[string]string{"Uid": strings.Repeat(strconv.Itoa(uu.uid)+" ", 3) + strconv.Itoa(uu.uid),
		"NoNewPrivs": nnp, "CapEff": amb, "CapPrm": amb, "CapAmb": amb, "CapBnd": strings.Join(u.bounding, ",")}
}

// pinnedDoc adds to the example an endpoint that attaches to a namespace
// someone else made and pinned (as a CNI runtime does).
const pinnedDoc = `
---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: pinned, tenant: acme, labels: {role: web}}
spec: {subnet: web, host: h2, netns: %s}
`

// TestAgentUnit runs the two-tenant example's data plane with every
// agent started as deploy/weft-agent.service starts it: as an
// unprivileged user with exactly the unit's capabilities and
// no_new_privs, after the unit's ExecStartPre. The agents program every
// endpoint, including one in a namespace pinned by root (the way of CNI
// runtimes); the demo's checks pass (policy allows and denies, tenants
// are isolated, a QoS class caps a stream), and the pinned endpoint
// answers pings from another host.
func TestAgentUnit(t *testing.T) {
	nettest.RequireRoot(t)
	unit := readUnit(t, "weft-agent.service")
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	// Made first, removed last: after the lab and its agents.
	pinnedName := testnet.DefaultPrefix() + "-pinned" // swept after a crash
	pinned, err := netnsfile.Create(netnsfile.DefaultDir, pinnedName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netnsfile.Delete(netnsfile.DefaultDir, pinnedName) })
	restoreNetnsDir(t)
	e := newDPLab(t, append(demo.Example(), fmt.Sprintf(pinnedDoc, pinned)...), demo.DatapathLinux)

	uu := newUnitUser(t)
	unit.runExecPre(t, uu)
	cmd := unit.command(t, uu)
	home := uu.dir(t)
	for _, h := range e.lab.Hosts() {
		f := bootstrap(t, e.cl, h.Name, home)
		if err := os.Chown(f[1], uu.uid, uu.gid); err != nil { // the token, 0600
			t.Fatal(err)
		}
		e.logs[h.Name] = &lockedWriter{w: &bytes.Buffer{}}
		a, err := e.lab.StartAgent(h, demo.AgentConfig{Binary: cmd, Controller: net.JoinHostPort(e.ctlIP, "7444"), API: e.apiURL(),
			BootstrapTokenFile: f[1], CAFile: f[3], StateDir: filepath.Join(home, h.Name), Log: e.logs[h.Name]})
		if err != nil {
			t.Fatal(err)
		}
		e.agents[h.Name] = a
	}
	eps := e.waitReady(7, 90*time.Second)

	want := unit.wantPrivileges(uu)
	for h, a := range e.agents {
		if diff := cmp.Diff(want, procPrivileges(t, a.Pid())); diff != "" {
			t.Errorf("agent of %s runs with other privileges than its unit's (-unit +process):\n%s", h, diff)
		}
	}

	ctx := context.Background()
	p := eps["acme/pinned"]
	if p.Status.Netns != pinned {
		t.Errorf("acme/pinned: status.netns %q, want %q", p.Status.Netns, pinned)
	}
	for _, pair := range [][2]string{{"acme/web-1", "acme/pinned"}, {"acme/pinned", "acme/web-1"}} {
		from, to := eps[pair[0]], eps[pair[1]]
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := testnet.Ping(pctx, from.Status.Netns, netip.MustParseAddr(to.Status.IP))
		cancel()
		if err != nil {
			t.Errorf("ping %s (%s) -> %s (%s): %v", pair[0], from.Status.Host, pair[1], to.Status.Host, err)
		}
	}

	var list []*apiv1.Endpoint
	for _, ep := range eps {
		list = append(list, ep)
	}
	objs, _, err := e.cl.List(ctx, apiv1.KindQoSClass, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var classes []*apiv1.QoSClass
	for _, o := range objs {
		classes = append(classes, o.(*apiv1.QoSClass))
	}
	results, err := demo.Check(ctx, list, classes)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	demo.PrintResults(&table, results)
	for _, r := range results {
		if !r.OK {
			t.Errorf("demo check %s -> %s %s: want %s, got %s", r.From, r.To, r.Proto, r.Want, r.Got)
		}
	}
	t.Logf("demo checks with agents under the unit's privileges:\n%s", table.String())
}

// restoreNetnsDir puts back the owner and mode of the named namespaces'
// directory after the test (the unit's ExecStartPre changes them).
func restoreNetnsDir(t *testing.T) {
	t.Helper()
	dir := netnsfile.DefaultDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	t.Cleanup(func() {
		if err := os.Chown(dir, int(st.Uid), int(st.Gid)); err != nil {
			t.Errorf("restore %s: %v", dir, err)
		}
		if err := os.Chmod(dir, fi.Mode()&(os.ModePerm|os.ModeSticky)); err != nil {
			t.Errorf("restore %s: %v", dir, err)
		}
	})
}

// TestControllerUnit runs a controller as deploy/weft-controller.service
// does: as an unprivileged user without any capability, with
// no_new_privs, on a data directory of that user. It serves the example
// through its API and programs the agents (sim datapath) of its hosts.
func TestControllerUnit(t *testing.T) {
	nettest.RequireRoot(t) // setpriv changes the user
	unit := readUnit(t, "weft-controller.service")
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	uu := newUnitUser(t)
	ctl := startControllerBin(t, unit.command(t, uu), uu.dir(t), freePort(t), freePort(t))
	if diff := cmp.Diff(unit.wantPrivileges(uu), procPrivileges(t, ctl.cmd.Process.Pid)); diff != "" {
		t.Errorf("controller runs with other privileges than its unit's (-unit +process):\n%s", diff)
	}
	if _, errOut, code := weft(t, ctl, "", "apply", "-f", examplesFile(t)); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		startAgent(t, ctl, h)
	}
	cl := ctl.client()
	eventually(t, 30*time.Second, "the example's 6 endpoints Ready", func() (bool, string) {
		objs, _, err := cl.List(context.Background(), apiv1.KindEndpoint, "", "")
		var s []string
		ready := 0
		for _, o := range objs {
			ep := o.(*apiv1.Endpoint)
			s = append(s, epID(ep)+"="+ep.Status.Phase)
			if ep.Status.Phase == apiv1.PhaseReady {
				ready++
			}
		}
		return err == nil && ready == 6 && len(objs) == 6, fmt.Sprint(s, err)
	})
	ctl.stop()
}

// TestAgentUnitCNI serves CNI from an agent started as
// deploy/weft-agent.service starts it (the unit's user, capabilities and
// no_new_privs), with a warm pool: through libcni, an ADD claims a pool
// endpoint (the agent bind-mounts the container's namespace on its pin and
// makes a veth into it), CHECK passes, a second ADD gets its endpoint too,
// and DEL deletes both and unpins the namespace.
func TestAgentUnitCNI(t *testing.T) {
	nettest.RequireRoot(t)
	unit := readUnit(t, "weft-agent.service")
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	bin, err := cniBinaries()
	if err != nil {
		t.Fatal(err)
	}
	restoreNetnsDir(t) // before the lab: restored after it
	e := newLabOf(t, []byte(cniDoc), demo.DatapathLinux, 1)
	uu := newUnitUser(t)
	unit.runExecPre(t, uu)
	home := uu.dir(t)
	h := e.lab.Hosts()[0]
	f := bootstrap(t, e.cl, h.Name, home)
	if err := os.Chown(f[1], uu.uid, uu.gid); err != nil { // the token, 0600
		t.Fatal(err)
	}
	sock := filepath.Join(home, "cni.sock")
	e.logs[h.Name] = &lockedWriter{w: &bytes.Buffer{}}
	a, err := e.lab.StartAgent(h, demo.AgentConfig{Binary: unit.command(t, uu), Controller: net.JoinHostPort(e.ctlIP, "7444"), API: e.apiURL(),
		BootstrapTokenFile: f[1], CAFile: f[3], StateDir: filepath.Join(home, h.Name), Log: e.logs[h.Name],
		Args: []string{"--cni-socket", sock, "--cni-subnet", "acme/pods", "--cni-pool", "1", "--cni-pool-min", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	e.agents[h.Name] = a
	ce := &cniEnv{dpEnv: e, bin: bin, sockets: map[string]string{h.Name: sock}, cache: filepath.Join(t.TempDir(), "cache")}
	ce.waitServing(h.Name) // the agent runs (past its wrapper's execs)
	if diff := cmp.Diff(unit.wantPrivileges(uu), procPrivileges(t, a.Pid())); diff != "" {
		t.Errorf("agent runs with other privileges than its unit's (-unit +process):\n%s", diff)
	}
	ce.waitPool(h.Name, 1)
	ctx, cn := t.Context(), ce.libcni()
	var rts []*libcni.RuntimeConf
	pin := ""
	for i, id := range []string{"unit-a", "unit-b"} {
		ns := ce.netns(id)
		rt := &libcni.RuntimeConf{ContainerID: id, NetNS: ns, IfName: "eth0"}
		r, err := cn.AddNetworkList(ctx, ce.defaultList(h.Name), rt)
		if err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		rts = append(rts, rt)
		checkResult(t, r, ns, "eth0")
		if err := cn.CheckNetworkList(ctx, ce.defaultList(h.Name), rt); err != nil {
			t.Errorf("CHECK %s: %v", id, err)
		}
		ep := ce.endpoint(id, "eth0")
		switch {
		case ep == nil:
			t.Fatalf("no endpoint records %s", id)
		case i == 0 && ep.Metadata.Annotations[cniserver.AnnotationPool] == "":
			t.Errorf("the first ADD did not claim the pool's endpoint: %s", epID(ep))
		case i == 0:
			pin = ep.Spec.Netns
		}
	}
	for _, rt := range rts {
		if err := cn.DelNetworkList(ctx, ce.defaultList(h.Name), rt); err != nil {
			t.Errorf("DEL %s: %v", rt.ContainerID, err)
		}
		if ep := ce.endpoint(rt.ContainerID, "eth0"); ep != nil {
			t.Errorf("endpoint of %s left after DEL: %s", rt.ContainerID, epID(ep))
		}
	}
	if pin != "" && isMount(t, pin) {
		t.Errorf("pin %s still holds a namespace after DEL", pin)
	}
}
