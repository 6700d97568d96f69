package v1

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// typed sets apiVersion and kind, as decoding does.
func typed[T Object](o T) T {
	*o.GetTypeMeta() = TypeMeta{APIVersion: APIVersion, Kind: kindOf(o)}
	return o
}

func tenantNamed(name string) *Tenant { return typed(&Tenant{Metadata: meta("", name)}) }

// badRequest returns the message of a BadRequest StatusError, failing the
// test if err is anything else.
func badRequest(t *testing.T, err error) string {
	t.Helper()
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *StatusError", err, err)
	}
	if se.Reason != ReasonBadRequest || se.Code != http.StatusBadRequest {
		t.Errorf("reason %s code %d, want %s %d", se.Reason, se.Code, ReasonBadRequest, http.StatusBadRequest)
	}
	return se.Message
}

const (
	vpcYAML = `apiVersion: weft/v1
kind: VPC
metadata: {name: main, tenant: acme}
spec: {cidrs: [10.0.0.0/16]}
`
	subnetYAML = `apiVersion: weft/v1
kind: Subnet
metadata:
  name: a
  tenant: acme
  labels:
    tier: "1"
spec:
  vpc: main
  cidr: 10.0.1.0/24
`
)

// appIntentYAML is the AppIntent of the API's design, with status.
const appIntentYAML = `apiVersion: weft/v1
kind: AppIntent
metadata: {name: shop, tenant: acme}
spec:
  vpc: main                       # same defaulting rule as SecurityPolicy
  selector: {matchLabels: {app: shop}}
  bandwidth: {min: 100Mbit, max: 1Gbit}   # optional; either may be empty
  latency: low
  talksTo:
  - {selector: {matchLabels: {app: db}}, ports: [{protocol: TCP, port: 5432}]}
  - {cidr: 192.0.2.0/24}
  exposes:
  - ports: [{protocol: TCP, port: 443}]
    from: [{cidr: 0.0.0.0/0}]     # empty from = anyone
status:
  observedGeneration: 3
  objects: [{kind: SecurityPolicy, name: appintent-shop}, {kind: QoSClass, name: appintent-shop}]
  unmet: ["bandwidth.min: host h1 has capacity 1Gbit with 950Mbit committed"]
`

// wantIntent returns the object of appIntentYAML.
func wantIntent() *AppIntent {
	return typed(&AppIntent{Metadata: meta("acme", "shop"), Spec: AppIntentSpec{
		VPC:       "main",
		Selector:  LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
		Bandwidth: &IntentBandwidth{Min: "100Mbit", Max: "1Gbit"},
		Latency:   LatencyLow,
		TalksTo: []IntentDestination{
			{PolicyPeer: PolicyPeer{Selector: &LabelSelector{MatchLabels: map[string]string{"app": "db"}}}, Ports: []PolicyPort{{Protocol: "TCP", Port: 5432}}},
			{PolicyPeer: PolicyPeer{CIDR: "192.0.2.0/24"}},
		},
		Exposes: []IntentExposure{{Ports: []PolicyPort{{Protocol: "TCP", Port: 443}}, From: []PolicyPeer{{CIDR: "0.0.0.0/0"}}}},
	}, Status: AppIntentStatus{
		ObservedGeneration: 3,
		Objects:            []LocalObjectReference{{Kind: KindSecurityPolicy, Name: "appintent-shop"}, {Kind: KindQoSClass, Name: "appintent-shop"}},
		Unmet:              []string{"bandwidth.min: host h1 has capacity 1Gbit with 950Mbit committed"},
	}})
}

var (
	wantVPC    = typed(&VPC{Metadata: meta("acme", "main"), Spec: VPCSpec{CIDRs: []string{"10.0.0.0/16"}}})
	wantSubnet = typed(&Subnet{Metadata: ObjectMeta{Name: "a", Tenant: "acme", Labels: map[string]string{"tier": "1"}},
		Spec: SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24"}})
)

func TestDecodeDocuments(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Object
		wantErr string // the exact message of the BadRequest
	}{
		{name: "multi-document YAML with empty documents and comments",
			in:   "---\n# a VPC\n" + vpcYAML + "---\n---\n# nothing here\n---\n" + subnetYAML + "---\n",
			want: []Object{wantVPC, wantSubnet}},
		{name: "document end marker",
			in:   vpcYAML + "...\n" + subnetYAML,
			want: []Object{wantVPC, wantSubnet}},
		{name: "document after --- on the same line",
			in:   "--- {apiVersion: weft/v1, kind: Tenant, metadata: {name: a}}\n--- # comment\n{apiVersion: weft/v1, kind: Tenant, metadata: {name: b}}\n",
			want: []Object{tenantNamed("a"), tenantNamed("b")}},
		{name: "CRLF line ends and a byte order mark",
			in:   "\ufeff" + strings.ReplaceAll(vpcYAML+"---\n"+subnetYAML, "\n", "\r\n"),
			want: []Object{wantVPC, wantSubnet}},
		{name: "separator-like text inside a document is not a separator",
			in:   "apiVersion: weft/v1\nkind: Tenant\nmetadata: {name: a}\nspec:\n  description: |\n    ---- not a separator\n    --- nor this\n",
			want: []Object{typed(&Tenant{Metadata: meta("", "a"), Spec: TenantSpec{Description: "---- not a separator\n--- nor this\n"}})}},
		{name: "plain number capacity", in: "apiVersion: weft/v1\nkind: Host\nmetadata: {name: h1}\nspec: {underlayIP: 192.0.2.1, capacity: 10000000000}\n",
			want: []Object{typed(&Host{Metadata: meta("", "h1"), Spec: HostSpec{UnderlayIP: "192.0.2.1", Capacity: "10000000000"}})}},
		{name: "JSON object",
			in:   `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main","tenant":"acme"},"spec":{"cidrs":["10.0.0.0/16"]}}`,
			want: []Object{wantVPC}},
		{name: "JSON array",
			in:   `[{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a"}}, null, {"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"b"}}]`,
			want: []Object{tenantNamed("a"), tenantNamed("b")}},
		{name: "JSON List",
			in: `{"kind":"List","items":[{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a"}},
			{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"b"}}]}`,
			want: []Object{tenantNamed("a"), tenantNamed("b")}},
		{name: "concatenated JSON objects",
			in:   "{\"apiVersion\":\"weft/v1\",\"kind\":\"Tenant\",\"metadata\":{\"name\":\"a\"}}\n{\"apiVersion\":\"weft/v1\",\"kind\":\"Tenant\",\"metadata\":{\"name\":\"b\"}}\n",
			want: []Object{tenantNamed("a"), tenantNamed("b")}},
		{name: "JSON documents separated by ---",
			in:   "{\"apiVersion\":\"weft/v1\",\"kind\":\"Tenant\",\"metadata\":{\"name\":\"a\"}}\n---\n{\"apiVersion\":\"weft/v1\",\"kind\":\"Tenant\",\"metadata\":{\"name\":\"b\"}}\n",
			want: []Object{tenantNamed("a"), tenantNamed("b")}},
		{name: "YAML List",
			in:   "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: weft/v1, kind: Tenant, metadata: {name: a}}\n- {apiVersion: weft/v1, kind: Tenant, metadata: {name: b}}\n",
			want: []Object{tenantNamed("a"), tenantNamed("b")}},
		{name: "AppIntent with every field", in: appIntentYAML, want: []Object{wantIntent()}},
		{name: "new metadata, policy and status fields",
			in: `apiVersion: weft/v1
kind: SecurityPolicy
metadata:
  name: appintent-shop
  tenant: acme
  annotations: {argocd.argoproj.io/sync-wave: "2"}
  ownerReferences: [{kind: AppIntent, name: shop, uid: u-1}]
spec:
  vpc: main
  selector: {}
  egress:
  - ports: [{protocol: ICMP, icmpType: 8, icmpCode: 0}]
---
apiVersion: weft/v1
kind: Endpoint
metadata: {name: e, tenant: acme}
spec: {subnet: a, host: h1}
status:
  identity: 70000
  conditions:
  - {type: PolicyProgrammed, status: "True", reason: Programmed, observedGeneration: 3, lastTransitionTime: "2024-01-02T03:04:05Z"}
---
apiVersion: weft/v1
kind: Tenant
metadata: {name: acme}
spec: {quota: {endpoints: 100, vpcs: 2, policies: 10}}
---
apiVersion: weft/v1
kind: VPC
metadata: {name: main, tenant: acme}
spec: {cidrs: [10.0.0.0/16], defaultPolicy: deny, qos: {maxRate: 10Gbit, minRate: 1000000000}}
`,
			want: []Object{
				typed(&SecurityPolicy{Metadata: ObjectMeta{Name: "appintent-shop", Tenant: "acme",
					Annotations:     map[string]string{"argocd.argoproj.io/sync-wave": "2"},
					OwnerReferences: []OwnerReference{{Kind: KindAppIntent, Name: "shop", UID: "u-1"}}},
					Spec: SecurityPolicySpec{VPC: "main", Egress: []PolicyRule{{Ports: []PolicyPort{{Protocol: "ICMP", ICMPType: new(8), ICMPCode: new(0)}}}}}}),
				typed(&Endpoint{Metadata: meta("acme", "e"), Spec: EndpointSpec{Subnet: "a", Host: "h1"}, Status: EndpointStatus{Identity: 70000,
					Conditions: []Condition{{Type: ConditionPolicyProgrammed, Status: ConditionTrue, Reason: "Programmed", ObservedGeneration: 3, LastTransitionTime: "2024-01-02T03:04:05Z"}}}}),
				typed(&Tenant{Metadata: meta("", "acme"), Spec: TenantSpec{Quota: &TenantQuota{Endpoints: 100, VPCs: 2, Policies: 10}}}),
				typed(&VPC{Metadata: meta("acme", "main"), Spec: VPCSpec{CIDRs: []string{"10.0.0.0/16"}, DefaultPolicy: DefaultPolicyDeny,
					QoS: &VPCQoS{MaxRate: "10Gbit", MinRate: "1000000000"}}}),
			}},
		{name: "empty input", in: "", want: nil},
		{name: "only comments and separators", in: "# nothing\n---\n\n---\n   \n", want: nil},
		{name: "null document", in: "null\n---\n~\n", want: nil},

		{name: "unknown top-level field in the second document",
			in:      vpcYAML + "---\n\n# the subnet\n" + strings.Replace(subnetYAML, "spec:", "spc:", 1),
			wantErr: `document 2 (line 8): unknown field "spc"`},
		{name: "unknown nested fields are all reported, with their paths",
			in:      "apiVersion: weft/v1\nkind: SecurityPolicy\nmetadata: {name: p, tenant: acme, nmae: x}\nspec:\n  ingress:\n  - ports:\n    - {port: 80, prot: TCP}\n",
			wantErr: `document 1 (line 1): unknown field "metadata.nmae"; document 1 (line 1): unknown field "spec.ingress[0].ports[0].prot"`},
		{name: "unknown fields in the new fields are reported with their paths",
			in: strings.Replace(strings.Replace(appIntentYAML, "ports: [{protocol: TCP, port: 5432}]", "ports: [{protocol: TCP, prot: 5432}]", 1),
				"{cidr: 192.0.2.0/24}", "{cidr: 192.0.2.0/24, except: [192.0.2.1/32]}", 1) +
				"---\napiVersion: weft/v1\nkind: Host\nmetadata: {name: h, ownerReferences: [{apiVersion: v1, kind: Tenant, name: t, uid: u}]}\n" +
				"---\napiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: e, tenant: t}\nstatus: {conditions: [{type: A, status: \"True\", time: now}]}\n",
			wantErr: `document 1 (line 1): unknown field "spec.talksTo[0].ports[0].prot"; document 1 (line 1): unknown field "spec.talksTo[1].except"; ` +
				`document 2 (line 20): unknown field "metadata.ownerReferences[0].apiVersion"; document 3 (line 24): unknown field "status.conditions[0].time"`},
		{name: "new fields with wrong types",
			in: "apiVersion: weft/v1\nkind: SecurityPolicy\nmetadata: {name: p, tenant: t, annotations: {a: 1}}\nspec: {vpc: 1, egress: [{ports: [{protocol: ICMP, icmpType: echo}]}]}\n" +
				"---\napiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: e, tenant: t}\nstatus: {identity: -1}\n",
			wantErr: `document 1 (line 1): metadata.annotations[a]: want a string, got number; document 1 (line 1): spec.egress[0].ports[0].icmpType: want an integer that fits in int, got string; ` +
				`document 1 (line 1): spec.vpc: want a string, got number; document 2 (line 6): status.identity: want an integer that fits in uint32, got number`},
		{name: "field names are case-sensitive",
			in:      `{"apiVersion":"weft/v1","kind":"Tenant","Metadata":{"name":"a"}}`,
			wantErr: `document 1 (line 1): unknown field "Metadata"`},
		{name: "wrong types",
			in:      "apiVersion: weft/v1\nkind: Subnet\nmetadata: {name: a, tenant: acme, labels: {tier: 1}}\nspec: {vpc: [main], cidr: 10.0.1.0/24}\n",
			wantErr: `document 1 (line 1): metadata.labels[tier]: want a string, got number; document 1 (line 1): spec.vpc: want a string, got array`},
		{name: "fraction for an integer",
			in:      `{"apiVersion":"weft/v1","kind":"QoSClass","metadata":{"name":"q","tenant":"a"},"spec":{"dscp":1.5}}`,
			wantErr: `document 1 (line 1): spec.dscp: want an integer that fits in int, got number`},
		{name: "duplicate JSON key",
			in:      `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a","name":"b"}}`,
			wantErr: `document 1 (line 1): duplicate field "name"`},
		{name: "duplicate YAML key reports its line",
			in:      vpcYAML + "---\napiVersion: weft/v1\nkind: Tenant\nmetadata: {name: a}\nkind: Tenant\n",
			wantErr: `document 2 (line 9): key "kind" already set in map`},
		{name: "unknown kind",
			in:      "apiVersion: weft/v1\nkind: Router\n",
			wantErr: `document 1 (line 1): unknown kind "Router"`},
		{name: "kind must be exact",
			in:      "apiVersion: weft/v1\nkind: vpc\n",
			wantErr: `document 1 (line 1): unknown kind "vpc" (did you mean "VPC"?)`},
		{name: "kind missing",
			in:      "apiVersion: weft/v1\nmetadata: {name: a}\n",
			wantErr: `document 1 (line 1): kind is required`},
		{name: "kind not a string",
			in:      "apiVersion: weft/v1\nkind: 7\n",
			wantErr: `document 1 (line 1): apiVersion and kind must be strings`},
		{name: "wrong apiVersion",
			in:      vpcYAML + "---\n" + strings.Replace(vpcYAML, "weft/v1", "v1", 1),
			wantErr: `document 2 (line 6): apiVersion "v1" is not supported, want "weft/v1"`},
		{name: "apiVersion missing",
			in:      "kind: Tenant\nmetadata: {name: a}\n",
			wantErr: `document 1 (line 1): apiVersion is required`},
		{name: "apiVersion and kind both wrong",
			in:      "apiVersion: weft/v2\nkind: Router\n",
			wantErr: `document 1 (line 1): apiVersion "weft/v2" is not supported, want "weft/v1"; document 1 (line 1): unknown kind "Router"`},
		{name: "malformed YAML in the third document reports the file line",
			in:      vpcYAML + "---\n" + subnetYAML + "---\napiVersion: weft/v1\nkind: Tenant\nmetadata:\n  name: a\n   tenant: b\n",
			wantErr: `document 3 (line 21): mapping values are not allowed in this context`},
		{name: "malformed YAML does not stop the other documents' checks",
			in:      "a: [\n---\napiVersion: weft/v1\nkind: Nope\n",
			wantErr: `document 1 (line 1): did not find expected node content; document 2 (line 3): unknown kind "Nope"`},
		{name: "tab indentation",
			in:      "apiVersion: weft/v1\nkind: Tenant\nmetadata:\n\tname: a\n",
			wantErr: `document 1 (line 4): found character that cannot start any token`},
		{name: "scalar document",
			in:      vpcYAML + "---\njust text\n",
			wantErr: `document 2 (line 6): want an object, got string`},
		{name: "JSON syntax error",
			in:      "{\"apiVersion\": \"weft/v1\",\n \"kind\": \"Tenant\",,\n}",
			wantErr: `document 1 (line 2): invalid JSON: invalid character ',' looking for beginning of object key string`},
		{name: "JSON array element not an object",
			in:      "[\n{\"apiVersion\":\"weft/v1\",\"kind\":\"Tenant\",\"metadata\":{\"name\":\"a\"}},\n42\n]",
			wantErr: `document 2 (line 3): want an object, got number`},
		{name: "JSON List item errors name the item and its line",
			in:      "{\"kind\": \"List\", \"items\": [\n  {\"apiVersion\":\"weft/v1\",\"kind\":\"Tenant\",\"metadata\":{\"name\":\"a\"}},\n\n  {\"apiVersion\":\"weft/v1\",\"kind\":\"Tenant\",\"spc\":{}}\n]}",
			wantErr: `document 1 item 2 (line 4): unknown field "spc"`},
		{name: "List with an unknown field",
			in:      `{"kind":"List","items":[],"extra":1}`,
			wantErr: `document 1 (line 1): List: unknown field "extra"`},
		{name: "List of another apiVersion",
			in:      `{"apiVersion":"apps/v1","kind":"List","items":[]}`,
			wantErr: `document 1 (line 1): List: apiVersion "apps/v1" is not supported, want "weft/v1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeDocuments([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("no error, want %q; decoded %d objects", tt.wantErr, len(got))
				}
				if diff := gocmp.Diff(tt.wantErr, badRequest(t, err)); diff != "" {
					t.Errorf("error message (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := gocmp.Diff(tt.want, got); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeDocumentsCapsErrors(t *testing.T) {
	in := strings.Repeat("apiVersion: weft/v1\nkind: Nope\n---\n", 25)
	msg := badRequest(t, mustFail(DecodeDocuments([]byte(in))))
	if n := strings.Count(msg, "unknown kind"); n != maxDecodeErrors {
		t.Errorf("%d errors reported, want %d", n, maxDecodeErrors)
	}
	if !strings.HasSuffix(msg, "; and 5 more errors") {
		t.Errorf("message %q does not end with the count of the rest", msg)
	}
}

func mustFail[T any](_ T, err error) error { return err }

func TestDecodeObject(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Object
		wantErr string
	}{
		{name: "JSON", in: `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main","tenant":"acme"},"spec":{"cidrs":["10.0.0.0/16"]}}`, want: wantVPC},
		{name: "YAML", in: subnetYAML, want: wantSubnet},
		{name: "YAML with a leading separator", in: "---\n" + subnetYAML, want: wantSubnet},
		{name: "one-line error has no location", in: `{"apiVersion":"weft/v1","kind":"Tenant","spc":{}}`, wantErr: `unknown field "spc"`},
		{name: "multi-line error has the line", in: "# x\n" + vpcYAML + "bogus: 1\n", wantErr: `line 2: unknown field "bogus"`},
		{name: "two documents", in: vpcYAML + "---\n" + subnetYAML, wantErr: "want exactly one object, got 2"},
		{name: "empty", in: "  \n", wantErr: "want exactly one object, got 0"},
		{name: "array", in: `[{"apiVersion":"weft/v1","kind":"Tenant"}]`, wantErr: "want one object, got an array"},
		{name: "List", in: `{"kind":"List","items":[]}`, wantErr: "want one object, got a List"},
		{name: "YAML syntax error", in: "apiVersion: weft/v1\nkind: [\n", wantErr: "line 2: did not find expected node content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeObject([]byte(tt.in))
			if tt.wantErr != "" {
				if diff := gocmp.Diff(tt.wantErr, badRequest(t, err)); diff != "" {
					t.Errorf("error message (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := gocmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeInto(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		kind    string
		want    Object
		wantErr string
	}{
		{name: "stored object", kind: KindVPC, want: wantVPC,
			in: `{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main","tenant":"acme"},"spec":{"cidrs":["10.0.0.0/16"]}}`},
		{name: "not strict", kind: KindTenant, want: tenantNamed("a"),
			in: `{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a"},"futureField":1}`},
		{name: "kind defaults from the argument", kind: "tenants", want: tenantNamed("a"),
			in: `{"metadata":{"name":"a"}}`},
		{name: "kind mismatch", kind: KindSubnet, in: `{"apiVersion":"weft/v1","kind":"VPC"}`, wantErr: `decode Subnet: data has kind "VPC"`},
		{name: "unknown kind", kind: "Router", in: `{}`, wantErr: "decode Router: unknown kind"},
		{name: "broken JSON", kind: KindTenant, in: `{"metadata":`, wantErr: "decode Tenant: unexpected end of JSON input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeInto([]byte(tt.in), tt.kind)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := gocmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestMarshal(t *testing.T) {
	t.Run("yaml", func(t *testing.T) {
		got, err := Marshal(wantSubnet, "yaml")
		if err != nil {
			t.Fatal(err)
		}
		want := `apiVersion: weft/v1
kind: Subnet
metadata:
  labels:
    tier: "1"
  name: a
  tenant: acme
spec:
  cidr: 10.0.1.0/24
  vpc: main
status: {}
`
		if diff := gocmp.Diff(want, string(got)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("json", func(t *testing.T) {
		tn := tenantNamed("a")
		tn.Spec.Description = "<b> & <i>"
		got, err := Marshal(tn, "json")
		if err != nil {
			t.Fatal(err)
		}
		want := "{\n  \"apiVersion\": \"weft/v1\",\n  \"kind\": \"Tenant\",\n  \"metadata\": {\n    \"name\": \"a\"\n  },\n  \"spec\": {\n    \"description\": \"<b> & <i>\"\n  }\n}\n"
		if diff := gocmp.Diff(want, string(got)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("unknown format", func(t *testing.T) {
		_, err := Marshal(wantVPC, "toml")
		if err == nil || err.Error() != `marshal vpc/acme/main: unknown format "toml", want json or yaml` {
			t.Errorf("error %v", err)
		}
		if _, err := MarshalList(nil, "toml"); err == nil {
			t.Error("MarshalList accepted toml")
		}
	})
}

// everyKind returns one full object of each kind, with status.
func everyKind() []Object {
	prio := 2
	return []Object{
		typed(&Tenant{Metadata: ObjectMeta{Name: "acme", UID: "u1", ResourceVersion: "12", Generation: 3, CreationTimestamp: "2024-01-02T03:04:05Z",
			Annotations: map[string]string{"note": "a: b\n- c"}},
			Spec: TenantSpec{Description: "line one\nline two: \"quoted\"", Quota: &TenantQuota{Endpoints: 5}}}),
		typed(&Host{Metadata: meta("", "h1"), Spec: HostSpec{UnderlayIP: "192.0.2.11", Capacity: "10Gbit"},
			Status: HostStatus{Liveness: LivenessAlive, ViewVersion: 1 << 40}}),
		typed(&QoSClass{Metadata: meta("acme", "gold"), Spec: QoSClassSpec{MinRate: "1G", MaxRate: "2G", Priority: &prio, DSCP: 46}}),
		typed(&VPC{Metadata: meta("acme", "main"), Spec: VPCSpec{CIDRs: []string{"10.0.0.0/16", "fd00::/48"}, DefaultPolicy: DefaultPolicyDeny,
			QoS: &VPCQoS{MaxRate: "1G"}}, Status: VPCStatus{VNI: 4096}}),
		typed(&Subnet{Metadata: meta("acme", "a"), Spec: SubnetSpec{VPC: "main", CIDR: "10.0.1.0/24", Gateway: "10.0.1.1"}}),
		typed(&SecurityPolicy{Metadata: ObjectMeta{Name: "p", Tenant: "acme", OwnerReferences: []OwnerReference{{Kind: KindAppIntent, Name: "shop", UID: "u2"}}},
			Spec: SecurityPolicySpec{
				VPC:      "main",
				Selector: LabelSelector{MatchExpressions: []LabelSelectorRequirement{{Key: "app", Operator: OpIn, Values: []string{"web", "api"}}}},
				Ingress: []PolicyRule{{Peers: []PolicyPeer{{CIDR: "0.0.0.0/0"}, {Selector: &LabelSelector{}}},
					Ports: []PolicyPort{{Protocol: "TCP", Port: 80, EndPort: 81}, {Protocol: "ICMP", ICMPType: new(3), ICMPCode: new(4)}}}},
			}}),
		wantIntent(),
		typed(&Endpoint{Metadata: ObjectMeta{Name: "web-1", Tenant: "acme", Labels: map[string]string{"app": "web", "yes": "no"}},
			Spec: EndpointSpec{Subnet: "a", Host: "h1", MAC: "02:00:00:00:00:01"},
			Status: EndpointStatus{IP: "10.0.1.10", Phase: PhaseReady, VNI: 4096, Identity: 65535, Conditions: []Condition{
				{Type: ConditionPolicyProgrammed, Status: ConditionTrue, ObservedGeneration: 2, LastTransitionTime: "2024-01-02T03:04:05Z"},
				{Type: ConditionQoSProgrammed, Status: ConditionFalse, Reason: "NoCapacity", Message: "host h1: no capacity"}}}}),
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	objs := everyKind()
	for _, format := range []string{"json", "yaml"} {
		t.Run(format+" objects", func(t *testing.T) {
			var all []byte
			for _, o := range objs {
				b, err := Marshal(o, format)
				if err != nil {
					t.Fatal(err)
				}
				if format == "yaml" {
					all = append(all, "---\n"...)
				}
				all = append(all, b...)
			}
			got, err := DecodeDocuments(all)
			if err != nil {
				t.Fatalf("%v\n%s", err, all)
			}
			if diff := gocmp.Diff(objs, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
		t.Run(format+" list", func(t *testing.T) {
			b, err := MarshalList(objs, format)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeDocuments(b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if diff := gocmp.Diff(objs, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("empty json list", func(t *testing.T) {
		b, err := MarshalList(nil, "json")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := DecodeDocuments(b); err != nil || len(got) != 0 {
			t.Errorf("DecodeDocuments(%s) = %v, %v", b, got, err)
		}
	})
}

func FuzzDecodeDocuments(f *testing.F) {
	seeds := []string{
		vpcYAML + "---\n" + subnetYAML,
		"--- {apiVersion: weft/v1, kind: Tenant, metadata: {name: a}}\n...\n",
		`[{"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a"}}, null, 1]`,
		`{"kind":"List","items":[{"apiVersion":"weft/v1","kind":"Host","spec":{"capacity":1e10}}]}`,
		"apiVersion: weft/v1\nkind: SecurityPolicy\nmetadata: {name: p, tenant: acme}\nspec:\n  selector: {matchExpressions: [{key: a, operator: In, values: [b]}]}\n  ingress:\n  - peers: [{cidr: 10.0.0.0/8}, {selector: {}}]\n    ports: [{protocol: udp, port: 53}]\n",
		"apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: e, tenant: acme, labels: {a: b}}\nspec: {subnet: a, host: h1, ip: 10.0.1.10, mac: 02:00:00:00:00:01, qosClass: gold}\nstatus: {ip: 10.0.1.10}\n",
		"apiVersion: weft/v1\nkind: QoSClass\nmetadata: {name: q, tenant: t}\nspec: {minRate: 1G, maxRate: 2G, priority: 3, dscp: 46}\n",
		appIntentYAML,
		"apiVersion: weft/v1\nkind: SecurityPolicy\nmetadata: {name: p, tenant: acme, annotations: {a: b}, ownerReferences: [{kind: AppIntent, name: i, uid: u}]}\n" +
			"spec: {selector: {}, egress: [{ports: [{protocol: ICMP, icmpType: 8, icmpCode: 0}]}]}\n",
		"apiVersion: weft/v1\nkind: VPC\nmetadata: {name: v, tenant: acme}\nspec: {cidrs: [10.0.0.0/16, fd00::/48], defaultPolicy: deny, qos: {minRate: 1G, maxRate: 2G}}\n",
		"apiVersion: weft/v1\nkind: Tenant\nmetadata: {name: t}\nspec: {quota: {endpoints: 10, vpcs: 1, policies: -1}}\n",
		"apiVersion: weft/v1\nkind: Endpoint\nmetadata: {name: e, tenant: acme}\nspec: {subnet: a, host: h1}\n" +
			"status: {identity: 7, conditions: [{type: QoSProgrammed, status: \"False\", reason: NoCapacity, message: m, observedGeneration: 2, lastTransitionTime: \"2024-01-02T03:04:05Z\"}]}\n",
		"a: &x [*x]\n",
		"a: b\n  c: d\n",
		"{\"a\":\n",
		"\ufeff---\r\n",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	l := world()
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := DecodeDocuments(data)
		if err != nil {
			var se *StatusError
			if !errors.As(err, &se) || se.Reason != ReasonBadRequest {
				t.Fatalf("error %v is not a BadRequest StatusError", err)
			}
			return
		}
		for _, o := range objs {
			// Whatever decodes re-encodes to the same object, in both formats.
			for _, format := range []string{"json", "yaml"} {
				b, err := Marshal(o, format)
				if err != nil {
					t.Fatalf("Marshal %s: %v", format, err)
				}
				back, err := DecodeObject(b)
				if err != nil {
					t.Fatalf("decode of marshalled %s: %v\n%s", format, err, b)
				}
				// omitempty turns empty slices and maps into absent ones.
				if diff := gocmp.Diff(o, back, cmpopts.EquateEmpty()); diff != "" {
					t.Fatalf("%s round trip changed the object (-before +after):\n%s", format, diff)
				}
			}
			// Defaulting and validation never panic.
			Default(o)
			DefaultRefs(o, o, l)
			_ = ValidateStatus(o)
			_ = ValidateObject(o)
			_ = ValidateCreate(o, l)
			_ = ValidateUpdate(o, o, l)
		}
	})
}

func BenchmarkDecodeObjectJSON(b *testing.B) {
	body := []byte(`{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"web-1","tenant":"acme","labels":{"app":"web"}},"spec":{"subnet":"a","host":"h1","qosClass":"gold"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeObject(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeInto(b *testing.B) {
	value := []byte(`{"apiVersion":"weft/v1","kind":"Endpoint","metadata":{"name":"web-1","tenant":"acme","labels":{"app":"web"},"uid":"u","resourceVersion":"5"},"spec":{"subnet":"a","host":"h1","qosClass":"gold"},"status":{"ip":"10.0.1.10","mac":"02:00:0a:00:01:0a","host":"h1","vni":4096,"phase":"Ready"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeInto(value, KindEndpoint); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidateCreateEndpoint(b *testing.B) {
	l := world()
	ep := mkEndpoint(func(o *Endpoint) { o.Spec.IP, o.Spec.QoSClass = "10.0.1.10", "gold" })
	Default(ep)
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateCreate(ep, l); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDecodeDocumentsJSON(t *testing.T) {
	docs, err := DecodeDocumentsJSON([]byte("apiVersion: weft/v1\nkind: Tenant\nmetadata: {name: a}\n---\n" +
		`{"apiVersion": "weft/v1", "kind": "VPC", "metadata": {"name": "v", "tenant": "a"}, "spec": {"cidrs": [], "defaultPolicy": null}}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range docs {
		got = append(got, RefOf(d.Object).String()+" "+string(d.JSON))
	}
	want := []string{
		`tenant/a {"apiVersion":"weft/v1","kind":"Tenant","metadata":{"name":"a"}}`,
		`vpc/a/v {"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"v","tenant":"a"},"spec":{"cidrs":[],"defaultPolicy":null}}`,
	}
	if d := gocmp.Diff(want, got); d != "" {
		t.Errorf("-want +got:\n%s", d)
	}
}
