package v1

import (
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

func TestParseFieldSelector(t *testing.T) {
	for _, tc := range []struct {
		name, kind, in string
		want           FieldSelector
		str            string // String() of the result; "" means in
		wantErr        string
	}{
		{name: "empty", kind: KindEndpoint, in: ""},
		{name: "blank", kind: KindEndpoint, in: "  "},
		{name: "every operator", kind: KindEndpoint, in: "spec.host=h1,spec.subnet==a,status.phase!=Ready",
			want: FieldSelector{{Field: "spec.host", Value: "h1"}, {Field: "spec.subnet", Value: "a"}, {Field: "status.phase", Value: "Ready", Not: true}},
			str:  "spec.host=h1,spec.subnet=a,status.phase!=Ready"},
		{name: "spaces", kind: KindEndpoint, in: " spec.host = h1 ", want: FieldSelector{{Field: "spec.host", Value: "h1"}}, str: "spec.host=h1"},
		{name: "empty value", kind: KindEndpoint, in: "status.phase=", want: FieldSelector{{Field: "status.phase"}}},
		{name: "metadata of a cluster-scoped kind", kind: "hosts", in: "metadata.name=h1", want: FieldSelector{{Field: "metadata.name", Value: "h1"}}},
		{name: "subnet by vpc", kind: KindSubnet, in: "spec.vpc=main,metadata.tenant=acme",
			want: FieldSelector{{Field: "spec.vpc", Value: "main"}, {Field: "metadata.tenant", Value: "acme"}}},
		{name: "unknown field", kind: KindEndpoint, in: "spec.ip=10.0.0.1",
			wantErr: `"spec.ip=10.0.0.1": Endpoint cannot be selected by field "spec.ip" (it can by metadata.name, metadata.tenant, spec.host, spec.subnet, status.phase)`},
		{name: "tenant of a cluster-scoped kind", kind: KindHost, in: "metadata.tenant=a", wantErr: `cannot be selected by field "metadata.tenant"`},
		{name: "host of a subnet", kind: KindSubnet, in: "spec.host=h1", wantErr: `cannot be selected by field "spec.host"`},
		{name: "no operator", kind: KindEndpoint, in: "spec.host", wantErr: "want field=value"},
		{name: "trailing comma", kind: KindEndpoint, in: "spec.host=h1,", wantErr: "empty requirement"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFieldSelector(tc.kind, tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := gocmp.Diff(tc.want, got); d != "" {
				t.Errorf("-want +got:\n%s", d)
			}
			str := tc.str
			if str == "" {
				str = strings.TrimSpace(tc.in)
			}
			if got.String() != str {
				t.Errorf("String() = %q, want %q", got.String(), str)
			}
		})
	}
}

func TestFieldSelectorMatches(t *testing.T) {
	ep := &Endpoint{TypeMeta: TypeMeta{Kind: KindEndpoint}, Metadata: ObjectMeta{Name: "web-1", Tenant: "acme"},
		Spec: EndpointSpec{Host: "h1", Subnet: "a"}, Status: EndpointStatus{Phase: PhaseReady}}
	for _, tc := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"spec.host=h1", true},
		{"spec.host=h2", false},
		{"spec.host!=h2", true},
		{"spec.host=h1,status.phase=Ready", true},
		{"spec.host=h1,status.phase!=Ready", false},
		{"metadata.name=web-1,metadata.tenant=acme,spec.subnet=a", true},
		{"status.phase=", false},
	} {
		t.Run(tc.sel, func(t *testing.T) {
			sel, err := ParseFieldSelector(KindEndpoint, tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Matches(ep); got != tc.want {
				t.Errorf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
	sel, _ := ParseFieldSelector(KindEndpoint, "spec.host!=h0,spec.host=h1")
	if v, ok := sel.Equals("spec.host"); !ok || v != "h1" {
		t.Errorf(`Equals("spec.host") = %q, %v; want "h1", true`, v, ok)
	}
	if _, ok := sel.Equals("spec.subnet"); ok {
		t.Error(`Equals("spec.subnet") found a requirement`)
	}
}
