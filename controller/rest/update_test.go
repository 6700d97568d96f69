package rest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/rest"
)

// statusRacer is a backend that, before the first update of an endpoint
// reaches the registry, writes the endpoint's status as its agent would:
// the object changes between the API's authorization read and the update.
type statusRacer struct {
	rest.Backend
	raced atomic.Bool
}

func (b *statusRacer) Update(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	if obj.GetTypeMeta().Kind == apiv1.KindEndpoint && b.raced.CompareAndSwap(false, true) {
		if _, err := b.MergePatchStatus(ctx, apiv1.RefOf(obj), []byte(`{"status":{"phase":"Ready"}}`)); err != nil {
			return nil, err
		}
	}
	return b.Backend.Update(ctx, obj, opts...)
}

// TestUpdateWithoutResourceVersionRacingStatus: an update without
// metadata.resourceVersion (last write wins) by a credential whose
// authorization reads the stored object is not refused with 409 when the
// object's status changes between that read and the write; one with a
// resourceVersion keeps its precondition.
func TestUpdateWithoutResourceVersionRacingStatus(t *testing.T) {
	racer := &statusRacer{}
	e := startConventionsWith(t, func(b rest.Backend) rest.Backend { racer.Backend = b; return racer })
	get := func() apiv1.Endpoint {
		t.Helper()
		r := e.do(t, "admin", "GET", "/tenants/acme/endpoints/web-1", "", "")
		var ep apiv1.Endpoint
		if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &ep) != nil {
			t.Fatalf("GET web-1: %d %s", r.code, r.body)
		}
		return ep
	}
	put := func(ep apiv1.Endpoint) response {
		t.Helper()
		b, err := json.Marshal(ep)
		if err != nil {
			t.Fatal(err)
		}
		return e.do(t, "h1-agent", "PUT", "/tenants/acme/endpoints/web-1", "application/json", string(b))
	}

	ep := get()
	rv0 := ep.Metadata.ResourceVersion
	ep.Metadata.ResourceVersion = ""
	ep.Metadata.Annotations = map[string]string{"weft.dev/attachment": "c1"}
	if r := put(ep); r.code != http.StatusOK {
		t.Fatalf("agent PUT without resourceVersion while its status changed: %d %s, want 200", r.code, r.body)
	}
	if !racer.raced.Load() {
		t.Fatal("the status write did not race the update")
	}
	got := get()
	if got.Metadata.Annotations["weft.dev/attachment"] != "c1" || got.Status.Phase != "Ready" {
		t.Errorf("stored annotations %v, phase %q; want the update's annotation and the status write's phase",
			got.Metadata.Annotations, got.Status.Phase)
	}

	// With a resourceVersion the client asked for a precondition: a stale
	// one is a conflict.
	stale := got
	stale.Metadata.ResourceVersion = rv0 // before both writes
	stale.Metadata.Annotations = map[string]string{"weft.dev/attachment": "c2"}
	if r := put(stale); r.code != http.StatusConflict {
		t.Errorf("agent PUT with a stale resourceVersion: %d %s, want 409", r.code, r.body)
	}
	// The agent may still change only annotations.
	moved := get()
	moved.Metadata.ResourceVersion = ""
	moved.Spec.Host = "h2"
	if r := put(moved); r.code != http.StatusForbidden {
		t.Errorf("agent PUT moving the endpoint: %d %s, want 403", r.code, r.body)
	}
}
