package client

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Results of Apply.
const (
	Created    = "created"
	Configured = "configured"
	Unchanged  = "unchanged"
)

// applyAttempts bounds how often Apply retries after losing a race.
const applyAttempts = 5

// Apply makes the stored object match obj's labels, annotations, owner
// references and spec: it creates obj if it does not exist ("created"),
// leaves it alone if they already match after defaulting ("unchanged"; an
// empty spec.vpc matches the stored one, which the controller keeps), or
// else replaces it
// ("configured") with an update conditioned on the resourceVersion it just
// read, retrying a few times if another writer got in between. Any
// resourceVersion in obj is ignored. It returns the result and the stored
// object; obj is not modified. With v1.WithDryRun nothing is stored, and the
// object returned is what would be (what `weft diff` compares).
func (c *Client) Apply(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (string, apiv1.Object, error) {
	k, ref, err := refOf(obj)
	if err != nil {
		return "", nil, err
	}
	if k.Namespaced && ref.Tenant == "" {
		return "", nil, fmt.Errorf("apply %s: %w", ref, errNoTenant(k))
	}
	var lastErr error
	lastRV := ""
	for range applyAttempts {
		cur, err := c.Get(ctx, k.Kind, ref.Tenant, ref.Name)
		if apiv1.IsNotFound(err) {
			created, err := c.Create(ctx, obj, opts...)
			if apiv1.IsAlreadyExists(err) { // created concurrently: compare with it
				lastErr = err
				continue
			}
			if err != nil {
				return "", nil, err
			}
			return Created, created, nil
		}
		if err != nil {
			return "", nil, err
		}
		rv := cur.GetObjectMeta().ResourceVersion
		if lastErr != nil && apiv1.IsConflict(lastErr) && rv == lastRV {
			// The object did not change since our update was refused, so
			// the conflict is not a lost race (an address taken, say).
			return "", nil, lastErr
		}
		same, err := sameDesired(k, obj, cur)
		if err != nil {
			return "", nil, fmt.Errorf("apply %s: %w", ref, err)
		}
		if same {
			return Unchanged, cur, nil
		}
		upd, err := clone(obj, k)
		if err != nil {
			return "", nil, fmt.Errorf("apply %s: %w", ref, err)
		}
		upd.GetObjectMeta().ResourceVersion = rv
		out, err := c.Update(ctx, upd, opts...)
		if apiv1.IsConflict(err) || apiv1.IsNotFound(err) { // lost a race with another writer
			lastErr, lastRV = err, rv
			continue
		}
		if err != nil {
			return "", nil, err
		}
		return Configured, out, nil
	}
	return "", nil, fmt.Errorf("apply %s: still conflicting after %d attempts: %w", ref, applyAttempts, lastErr)
}

// sameDesired reports whether desired and current have JSON-equal labels,
// annotations, owner references and spec once both are defaulted, the
// references of desired from current as the controller defaults them on
// update.
func sameDesired(k apiv1.KindInfo, desired, current apiv1.Object) (bool, error) {
	d, err := desiredState(k, desired, current)
	if err != nil {
		return false, err
	}
	c, err := desiredState(k, current, nil)
	if err != nil {
		return false, err
	}
	return reflect.DeepEqual(d, c), nil
}

// desiredState returns the generic JSON form of the defaulted labels,
// annotations, owner references and spec of a copy of o; with stored
// (not nil), what o leaves empty of its references is stored's.
func desiredState(k apiv1.KindInfo, o, stored apiv1.Object) (any, error) {
	cp, err := clone(o, k)
	if err != nil {
		return nil, err
	}
	apiv1.Default(cp)
	if stored != nil {
		apiv1.DefaultRefs(cp, stored, noObjects{})
	}
	data, err := json.Marshal(cp)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", k.Kind, err)
	}
	var m struct {
		Metadata struct {
			Labels          map[string]string `json:"labels"`
			Annotations     map[string]string `json:"annotations"`
			OwnerReferences []any             `json:"ownerReferences"`
		} `json:"metadata"`
		Spec any `json:"spec"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k.Kind, err)
	}
	if len(m.Metadata.Labels) == 0 {
		m.Metadata.Labels = nil
	}
	if len(m.Metadata.Annotations) == 0 {
		m.Metadata.Annotations = nil
	}
	if len(m.Metadata.OwnerReferences) == 0 {
		m.Metadata.OwnerReferences = nil
	}
	return m, nil
}

// noObjects is an apiv1.Lookup that finds nothing: Apply defaults
// references from the stored object only.
type noObjects struct{}

func (noObjects) Get(string, string, string) (apiv1.Object, bool) { return nil, false }
func (noObjects) List(string, string) []apiv1.Object              { return nil }
