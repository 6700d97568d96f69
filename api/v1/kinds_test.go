package v1

import (
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

func TestKinds(t *testing.T) {
	var order []string
	for _, k := range Kinds() {
		order = append(order, k.Kind)
		o := k.New()
		if got := kindOf(o); got != k.Kind {
			t.Errorf("%s.New() is a %T of kind %q", k.Kind, o, got)
		}
		if tm := *o.GetTypeMeta(); tm != (TypeMeta{APIVersion, k.Kind}) {
			t.Errorf("%s.New() has type meta %+v", k.Kind, tm)
		}
	}
	// Dependency order: an object refers only to kinds before it (an
	// AppIntent to its VPC; endpoints do not refer to intents; traces and
	// captures to endpoints).
	want := []string{KindTenant, KindHost, KindQoSClass, KindVPC, KindSubnet, KindSecurityPolicy, KindAppIntent, KindEndpoint, KindTrace, KindCapture}
	if diff := gocmp.Diff(want, order); diff != "" {
		t.Errorf("kinds (-want +got):\n%s", diff)
	}
}

func TestLookupKind(t *testing.T) {
	tests := []struct {
		name       string
		want       string
		namespaced bool
	}{
		{"AppIntent", KindAppIntent, true},
		{"appintents", KindAppIntent, true},
		{"appintent", KindAppIntent, true},
		{"intent", KindAppIntent, true},
		{"ai", KindAppIntent, true},
		{"APPINTENT", KindAppIntent, true},
		{"SP", KindSecurityPolicy, true},
		{"Hosts", KindHost, false},
		{"sp", KindSecurityPolicy, true},
		{"hosts", KindHost, false},
		{"intents", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, ok := LookupKind(tt.name)
			if ok != (tt.want != "") || k.Kind != tt.want || k.Namespaced != tt.namespaced {
				t.Errorf("LookupKind(%q) = %s (namespaced %v), %v; want %q (namespaced %v)", tt.name, k.Kind, k.Namespaced, ok, tt.want, tt.namespaced)
			}
		})
	}
}

// TestLookupKindAllocates nothing: the REST server resolves a kind on
// every request.
func TestLookupKindAllocates(t *testing.T) {
	for _, name := range []string{"Endpoint", "endpoints", "EP", "nosuchkind"} {
		if n := testing.AllocsPerRun(100, func() { LookupKind(name) }); n != 0 {
			t.Errorf("LookupKind(%q) allocates %v times per call", name, n)
		}
	}
}
