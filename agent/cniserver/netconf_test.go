package cniserver

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEndpointNameCarriesIfName(t *testing.T) {
	for _, ifName := range []string{"eth0", "net1", "a", "veth-x-1"} {
		t.Run(ifName, func(t *testing.T) {
			a := attachment{network: "weft", containerID: "c1", ifName: ifName}
			name := a.endpointName()
			if err := checkIfName(ifName); err != nil {
				t.Fatal(err)
			}
			if got := IfName("acme/" + name); got != ifName {
				t.Errorf("IfName(%q) = %q, want %q", name, got, ifName)
			}
			if other := (attachment{network: "weft", containerID: "c2", ifName: ifName}).endpointName(); other == name {
				t.Errorf("two containers, one name %q", name)
			}
		})
	}
	for _, id := range []string{"acme/web-1", "acme/cni-x", "acme/cni-zzzzzzzzzzzz-eth0", "cni-0123456789ab-eth0", "acme/cni-0123456789ab"} {
		if got := IfName(id); got != "" {
			t.Errorf("IfName(%q) = %q, want none", id, got)
		}
	}
}

func TestCheckIfName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"eth0", true}, {"net-1", true}, {"", false}, {"Eth0", false}, {"eth_0", false}, {"-eth0", false},
		{"eth0-", false}, {"abcdefghijklmno", true}, {"abcdefghijklmnop", false}, {"a/b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkIfName(tc.name); (err == nil) != tc.ok {
				t.Errorf("checkIfName(%q) = %v, want ok %v", tc.name, err, tc.ok)
			}
		})
	}
}

func TestSelection(t *testing.T) {
	def := Selection{Tenant: "acme", VPC: "main", Subnet: "pods"}
	for _, tc := range []struct {
		name string
		conf string
		want *selection
		err  string
	}{
		{"default", `{"name":"n"}`, &selection{tenant: "acme", vpc: "main", subnet: "pods"}, ""},
		{"named", `{"name":"n","tenant":"globex","subnet":"web","qosClass":"gold"}`, &selection{tenant: "globex", subnet: "web", qosClass: "gold"}, ""},
		{"labels and args", `{"name":"n","labels":{"a":"1","b":"2"},"args":{"cni":{"labels":{"b":"3"}}}}`,
			&selection{tenant: "acme", vpc: "main", subnet: "pods", labels: map[string]string{"a": "1", "b": "3"}}, ""},
		{"half", `{"name":"n","tenant":"globex"}`, nil, "no subnet selected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := parseNetConf([]byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			d := def
			if tc.name == "half" {
				d = Selection{}
			}
			got, err := nc.selection(d)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("selection: %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(selection{})); diff != "" {
				t.Errorf("selection (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRequested(t *testing.T) {
	for _, tc := range []struct {
		name, conf, ip, mac string
		bad                 bool
	}{
		{"none", `{"name":"n"}`, "", "", false},
		{"ipv4 of several", `{"name":"n","runtimeConfig":{"ips":["fd00::5/64","10.0.1.7/24"],"mac":"02:00:00:00:00:0A"}}`, "10.0.1.7", "02:00:00:00:00:0a", false},
		{"bare address", `{"name":"n","runtimeConfig":{"ips":["10.0.1.8"]}}`, "10.0.1.8", "", false},
		{"bad ip", `{"name":"n","runtimeConfig":{"ips":["ten"]}}`, "", "", true},
		{"bad mac", `{"name":"n","runtimeConfig":{"mac":"02:00"}}`, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := parseNetConf([]byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			ip, mac, err := nc.requested()
			if (err != nil) != tc.bad || ip != tc.ip || mac != tc.mac {
				t.Errorf("requested = %q, %q, %v; want %q, %q, error %v", ip, mac, err, tc.ip, tc.mac, tc.bad)
			}
		})
	}
}

func TestBandwidthRate(t *testing.T) {
	for _, tc := range []struct {
		b    *Bandwidth
		want uint64
	}{
		{nil, 0}, {&Bandwidth{}, 0}, {&Bandwidth{IngressRate: 5}, 5}, {&Bandwidth{EgressRate: 7}, 7},
		{&Bandwidth{IngressRate: 9, EgressRate: 4, IngressBurst: 100}, 4},
	} {
		if got := tc.b.rate(); got != tc.want {
			t.Errorf("%+v.rate() = %d, want %d", tc.b, got, tc.want)
		}
	}
}

func TestAnnotations(t *testing.T) {
	a := attachment{network: "weft", containerID: "c1", ifName: "eth0"}
	got := annotations(a, "/run/netns/c1", "IgnoreUnknown=1;K8S_POD_NAME=web-0;bad key=x;novalue",
		map[string]string{"example.com/team": "blue", "not a key": "x"})
	want := map[string]string{
		AnnotationNetwork: "weft", AnnotationContainerID: "c1", AnnotationIfName: "eth0", AnnotationNetns: "/run/netns/c1",
		"cni-args.weft.io/K8S_POD_NAME": "web-0", "example.com/team": "blue",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	// Within the API's limits: a pod with too many annotations loses some.
	many := map[string]string{}
	for i := range 200 {
		many["example.com/a"+strings.Repeat("x", i%50)+string(rune('a'+i%26))] = "v"
	}
	if n := len(annotations(a, "/n", "", many)); n > 64 {
		t.Errorf("%d annotations, more than the API takes", n)
	}
}
