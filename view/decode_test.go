package view

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/wire"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the generated seed files testdata/fuzz/FuzzXxx/seed-*")

// types are the resource types, indexed by FuzzDecode's type byte.
var types = []string{TypeHost, TypeVPC, TypeEndpoint, TypePolicy, TypeQoS, TypeTrace, TypeCapture}

// samples are view resources as the controller encodes them.
func samples() []any {
	return []any{
		&Host{Name: "h1", HostID: 7, UnderlayIP: "192.0.2.11", CapacityBps: 25e9},
		&Host{Name: "h2", UnderlayIP: "100.64.0.2"},
		&VPC{Tenant: "acme", Name: "main", VNI: 100, CIDRs: []string{"10.0.0.0/16", "fd00::/48"}, Subnets: []Subnet{
			{Name: "a", CIDR: "10.0.1.0/24", Gateway: "10.0.1.1"}, {Name: "b", CIDR: "10.0.2.0/24"},
		}},
		&VPC{Tenant: "t0", Name: "v0", VNI: 1 << 24, CIDRs: []string{}, Subnets: []Subnet{}},
		&VPC{Tenant: "t0", Name: "deny", VNI: 7, CIDRs: []string{"10.0.0.0/8"}, Subnets: []Subnet{},
			DefaultDeny: true, MaxRateBps: 1e9, MinRateBps: 1e8},
		&Endpoint{Tenant: "acme", Name: "web", UID: "0f2a3c4d-0001-4001-8000-000000000001", VPC: "main", VNI: 100,
			Subnet: "a", CIDR: "10.0.1.0/24", Gateway: "10.0.1.1", IP: "10.0.1.10", MAC: "02:00:0a:00:01:0a",
			Netns: "/var/run/netns/web", QoSClass: "gold", Labels: map[string]string{"app": "web", "tier": "frontend"},
			Identity: 4242, Generation: 3},
		&Endpoint{Tenant: "t0", Name: "e1", VPC: "v0", VNI: 1000, Subnet: "s0", CIDR: "10.0.0.0/16", IP: "10.0.0.2",
			MAC: "02:00:0a:00:00:02"},
		&Policy{Tenant: "acme", Name: "p", VPC: "main", IngressIsolated: true, EgressIsolated: true,
			Ingress: []Rule{
				{Name: "acme/p ingress[0]", Identities: []uint32{1, 65535},
					Ports: []Port{{Protocol: 6, First: 80, Last: 80, ICMPType: -1, ICMPCode: -1}}},
				{Name: "acme/p ingress[1]", AllPeers: true,
					Ports: []Port{{Protocol: 1, ICMPType: 8, ICMPCode: -1}, {Protocol: 17, First: 1000, Last: 2000, ICMPType: -1, ICMPCode: -1}}},
			},
			Egress: []Rule{
				{Name: "acme/p egress[0]", Prefixes: []string{"10.0.1.5/32", "192.0.2.0/24"}},
				{Name: "acme/p egress[1]"},
			},
			Applies: []string{"acme/web", "acme/web-2"}},
		&Policy{Tenant: "acme", Name: "deny-in", VPC: "main", IngressIsolated: true, Applies: []string{"acme/db"}},
		&QoS{Tenant: "acme", Name: "gold", MinRateBps: 1e8, MaxRateBps: 1e9, Priority: -3, DSCP: 46},
		&QoS{Tenant: "acme", Name: "bronze"},
		&Trace{Tenant: "acme", Name: "t1", UID: "0f2a3c4d-0001-4001-8000-000000000002", Mode: "probe", Fire: true, VNI: 100, Token: 77,
			Proto: 17, Src: "10.0.1.10", Dst: "10.0.2.10", SPort: 50000, DPort: 53, Source: "web", SourceIdentity: 4242},
		&Trace{Tenant: "acme", Name: "live", Mode: "live", VNI: 100, Token: 1, Proto: 6, Src: "10.0.1.10", Dst: "10.0.2.10",
			Dest: "db", Count: 10, Until: "2030-01-01T00:00:00Z"},
		&Capture{Tenant: "acme", Name: "c1", UID: "0f2a3c4d-0001-4001-8000-000000000003", Endpoints: []string{"acme/web"},
			Program: [][4]uint32{{40, 0, 0, 12}, {6, 0, 0, 65535}}, Underlay: []UnderlayProgram{{VNI: 100, Program: [][4]uint32{{6, 0, 0, 0}}}},
			Direction: "both", Snaplen: 128, Rate: 1000, Count: 10, Collector: "https://127.0.0.1:7443", Until: "2030-01-01T00:00:00Z"},
		&Capture{Tenant: "acme", Name: "drops", Endpoints: []string{}, Direction: "in", DroppedOnly: true, Snaplen: 65535, Rate: 1, Count: 1, Until: ""},
	}
}

// edgeSeeds are resources at the edges of the fast decoder's plain form,
// by type.
var edgeSeeds = []struct {
	typ  string
	data string
}{
	{TypeHost, ` { "name" : "h1" , "hostID" : 4294967295 , "capacityBps" : 18446744073709551615 } `},
	{TypeHost, `{"hostID":4294967296}`},
	{TypeHost, `{"capacityBps":18446744073709551616}`},
	{TypeHost, `{"name":"a","Name":"b"}`},
	{TypeHost, `{"name":"a","name":"b"}`},
	{TypeHost, `{"hostID":01}`},
	{TypeHost, `{"hostID":1.0}`},
	{TypeHost, `{"hostID":1e2}`},
	{TypeHost, `{"hostID":-0}`},
	{TypeHost, `{"hostID":null}`},
	{TypeHost, `{"name":null}`},
	{TypeHost, `{"name":"\u0068"}`},
	{TypeHost, `{"name":"é\xff"}`},
	{TypeHost, `{"ſame":"x"}`},
	{TypeHost, `{"unknown":{"a":[1,-2.5e+3,{"b":"\\"}],"c":"\ud800"},"name":"h"}`},
	{TypeHost, `{"name":"h"}x`},
	{TypeHost, `null`},
	{TypeHost, `[]`},
	{TypeVPC, `{"cidrs":[],"subnets":[]}`},
	{TypeVPC, `{"cidrs":null,"subnets":null}`},
	{TypeVPC, `{"cidrs":["a",1]}`},
	{TypeVPC, `{"subnets":[{"name":"a","cidr":"10.0.0.0/8","gateway":"10.0.0.1","extra":true},{}]}`},
	{TypeVPC, `{"subnets":[null]}`},
	{TypeVPC, `{"subnets":[{"NAME":"a"}]}`},
	{TypeVPC, `{"subnets":[{"name":"a","name":"b"}]}`},
	{TypeVPC, `{"vni":16777216,"vni":1}`},
	{TypeEndpoint, `{"labels":{"a":"1","a":"2","B":"3"}}`},
	{TypeEndpoint, `{"labels":{}}`},
	{TypeEndpoint, `{"labels":null}`},
	{TypeEndpoint, `{"labels":{"a":1}}`},
	{TypeEndpoint, `{"labels":{"\u0061":"x"}}`},
	{TypeEndpoint, `{"labels":{"é":"ü"}}`},
	{TypeEndpoint, `{"labels":{"a":"x"},"labels":{"b":"y"}}`},
	{TypeEndpoint, `{"identity":4294967295,"vni":0}`},
	{TypeQoS, `{"priority":-9223372036854775808,"dscp":9223372036854775807}`},
	{TypeQoS, `{"priority":-9223372036854775809}`},
	{TypeQoS, `{"priority":9223372036854775808}`},
	{TypeQoS, `{"priority":-01}`},
	{TypeQoS, `{"priority":-}`},
	{TypeQoS, `{"priority":-0,"dscp":-5}`},
	{TypePolicy, `{"tenant":"acme","name":"p","spec":{"selector":{}},"applies":["acme/web"]}`},
	{TypePolicy, `{"ingress":[],"egress":null,"applies":[]}`},
	{TypePolicy, `{"ingress":[null]}`},
	{TypePolicy, `{"ingress":[{"identities":[],"prefixes":[],"ports":[]}]}`},
	{TypePolicy, `{"ingress":[{"identities":null,"prefixes":null,"ports":null}]}`},
	{TypePolicy, `{"ingress":[{"identities":[4294967296]}]}`},
	{TypePolicy, `{"ingress":[{"identities":[1,-1]}]}`},
	{TypePolicy, `{"ingress":[{"name":"a","NAME":"b"}]}`},
	{TypePolicy, `{"egress":[{"ports":[{"protocol":256}]}]}`},
	{TypePolicy, `{"egress":[{"ports":[{"protocol":255,"first":65535,"last":65536}]}]}`},
	{TypePolicy, `{"egress":[{"ports":[{"icmpType":-32768,"icmpCode":32767}]}]}`},
	{TypePolicy, `{"egress":[{"ports":[{"icmpType":-32769}]}]}`},
	{TypePolicy, `{"egress":[{"ports":[{"icmpCode":32768}]}]}`},
	{TypePolicy, `{"egress":[{"ports":[{"Protocol":6,"extra":[1]}]}]}`},
	{TypePolicy, `{"egress":[{"allPeers":true,"allPeers":false}]}`},
	{TypePolicy, `{"ingressIsolated":1}`},
	{TypePolicy, `{"ingressIsolated":null,"egressIsolated":true}`},
	{TypeVPC, `{"defaultDeny":true,"maxRateBps":18446744073709551615,"minRateBps":0}`},
	{TypeVPC, `{"defaultDeny":"true"}`},
	{TypeVPC, `{"minRateBps":-1}`},
	{TypeEndpoint, `{"generation":-9223372036854775808}`},
	{TypeEndpoint, `{"generation":9223372036854775808}`},
	{TypeEndpoint, `{"generation":1.5}`},
}

// reference decodes r the way Decode is specified to: json.Unmarshal into
// a zero value of the type.
func reference(r wire.Resource) (any, error) {
	var v any
	switch r.Key.Type {
	case TypeHost:
		v = &Host{}
	case TypeVPC:
		v = &VPC{}
	case TypeEndpoint:
		v = &Endpoint{}
	case TypePolicy:
		v = &Policy{}
	case TypeQoS:
		v = &QoS{}
	case TypeTrace:
		v = &Trace{}
	case TypeCapture:
		v = &Capture{}
	default:
		return nil, fmt.Errorf("view: unknown resource type %q", r.Key.Type)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		return nil, fmt.Errorf("view: decode %s: %w", r.Key, err)
	}
	return v, nil
}

// checkDecode checks that Decode and dec.Decode give exactly what
// reference gives for r.
func checkDecode(t *testing.T, dec *Decoder, r wire.Resource) {
	t.Helper()
	want, wantErr := reference(r)
	for _, d := range []struct {
		name string
		f    func(wire.Resource) (any, error)
	}{{"Decode", Decode}, {"Decoder.Decode", dec.Decode}} {
		got, err := d.f(r)
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("%s(%s %q): error %v, json.Unmarshal's %v", d.name, r.Key.Type, r.Data, err, wantErr)
		case err != nil && err.Error() != wantErr.Error():
			t.Fatalf("%s(%s %q): error %q, json.Unmarshal's %q", d.name, r.Key.Type, r.Data, err, wantErr)
		case err == nil:
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("%s(%s %q) (-json.Unmarshal +got):\n%s", d.name, r.Key.Type, r.Data, diff)
			}
		}
	}
}

// usedDecoder returns a Decoder that has decoded every sample, so that its
// reused memory holds values of an earlier resource.
func usedDecoder(t testing.TB) *Decoder {
	dec := &Decoder{}
	for _, s := range samples() {
		r, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dec.Decode(r); err != nil {
			t.Fatal(err)
		}
	}
	return dec
}

func TestDecode(t *testing.T) {
	dec := usedDecoder(t)
	for _, s := range samples() {
		r, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		t.Run("sample "+r.Key.String(), func(t *testing.T) {
			checkDecode(t, dec, r)
			got, err := Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(s, got); diff != "" {
				t.Errorf("round trip (-encoded +decoded):\n%s", diff)
			}
		})
	}
	for i, s := range edgeSeeds {
		t.Run(fmt.Sprintf("edge %d %s", i, s.typ), func(t *testing.T) {
			checkDecode(t, dec, wire.Resource{Key: wire.ResourceKey{Type: s.typ, ID: "x"}, Data: []byte(s.data)})
		})
	}
	t.Run("unknown type", func(t *testing.T) {
		r := wire.Resource{Key: wire.ResourceKey{Type: "route", ID: "x"}, Data: []byte(`{}`)}
		for _, f := range []func(wire.Resource) (any, error){Decode, dec.Decode} {
			if _, err := f(r); err == nil || !strings.Contains(err.Error(), `unknown resource type "route"`) {
				t.Errorf("decode of an unknown type: %v", err)
			}
		}
	})
}

// TestFastPath: what Encode writes is decoded without encoding/json (the
// point of the fast decoder; a change to a view type that the fast
// decoder does not follow would silently fall back).
func TestFastPath(t *testing.T) {
	for _, s := range samples() {
		r, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		var ok bool
		switch r.Key.Type {
		case TypeHost:
			ok = fastHost(r.Data, &Host{})
		case TypeVPC:
			ok = fastVPC(r.Data, &VPC{}, nil)
		case TypeEndpoint:
			ok = fastEndpoint(r.Data, &Endpoint{}, &scratch{})
		case TypePolicy:
			ok = fastPolicy(r.Data, &Policy{}, &scratch{})
		case TypeQoS:
			ok = fastQoS(r.Data, &QoS{})
		case TypeTrace, TypeCapture:
			continue // rare: json.Unmarshal only
		default:
			t.Fatalf("no fast decoder for %s", r.Key.Type)
		}
		if !ok {
			t.Errorf("%s %s: the fast decoder gave up on %s", r.Key.Type, r.Key.ID, r.Data)
		}
	}
}

// TestDecoderReuse: a Decoder hands out the same memory again, and a value
// decoded earlier is overwritten by the next of its type.
func TestDecoderReuse(t *testing.T) {
	var dec Decoder
	a, _ := Encode(&Endpoint{Tenant: "acme", Name: "a", Labels: map[string]string{"x": "1"}})
	b, _ := Encode(&Endpoint{Tenant: "acme", Name: "b", Labels: map[string]string{"y": "2"}})
	va, err := dec.Decode(a)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := dec.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if va != vb {
		t.Errorf("two endpoints decoded into %p and %p, want one reused value", va, vb)
	}
	if want := map[string]string{"y": "2"}; !cmp.Equal(vb.(*Endpoint).Labels, want) {
		t.Errorf("labels %v, want %v", vb.(*Endpoint).Labels, want)
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _ = dec.Decode(a) }); allocs > 6 {
		t.Errorf("Decoder.Decode of an endpoint: %.0f allocations, want at most 6 (its strings)", allocs)
	}
}

// FuzzDecode checks Decode and Decoder.Decode against json.Unmarshal:
// they give the same value, or the same error, for every input.
func FuzzDecode(f *testing.F) {
	for _, s := range samples() {
		r, err := Encode(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(typeIndex(r.Key.Type), []byte(r.Data))
	}
	for _, s := range edgeSeeds {
		f.Add(typeIndex(s.typ), []byte(s.data))
	}
	dec := usedDecoder(f)
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		r := wire.Resource{Key: wire.ResourceKey{Type: types[int(typ)%len(types)], ID: "t/x"}, Data: data}
		checkDecode(t, dec, r)
	})
}

func typeIndex(typ string) uint8 {
	for i, s := range types {
		if s == typ {
			return uint8(i)
		}
	}
	panic("unknown type " + typ)
}

// TestSeedCorpus checks that FuzzDecode has a checked-in seed corpus; with
// -update-corpus it first regenerates the seed-* files from samples and
// edgeSeeds (the other files there are inputs the fuzzer found
// interesting, copied from its cache).
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *updateCorpus {
		old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var seeds [][2]any
		for _, s := range samples() {
			r, err := Encode(s)
			if err != nil {
				t.Fatal(err)
			}
			seeds = append(seeds, [2]any{typeIndex(r.Key.Type), []byte(r.Data)})
		}
		for _, s := range edgeSeeds {
			seeds = append(seeds, [2]any{typeIndex(s.typ), []byte(s.data)})
		}
		for i, s := range seeds {
			b := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", s[0], s[1])
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("FuzzDecode has no seed corpus in %s (run go test -run TestSeedCorpus -update-corpus)", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "go test fuzz v1\n") {
			t.Errorf("%s is not in the go test fuzz v1 format", f)
		}
	}
}
