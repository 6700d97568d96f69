package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Status has several writers (the liveness tracker, the config stream,
// agents through the API), each owning some fields. They change it with
// PatchStatus or MergePatchStatus, which apply their change to the stored
// status at every attempt, so that none overwrites another's fields.

// UpdateStatus replaces an object's status (the controller's and agents'
// view of the world), leaving spec and labels alone. Writers that own only
// some status fields use PatchStatus or MergePatchStatus, which cannot
// overwrite the others.
func (r *Registry) UpdateStatus(ctx context.Context, obj apiv1.Object) (apiv1.Object, error) {
	if _, err := kindOf(obj); err != nil {
		return nil, err
	}
	status := reflect.ValueOf(obj).Elem().FieldByName("Status")
	return r.patchStatus(ctx, apiv1.RefOf(obj), syncAnswers, func(next apiv1.Object) bool {
		reflect.ValueOf(next).Elem().FieldByName("Status").Set(status)
		return true
	})
}

// MergePatchStatus changes an object's status with a JSON merge patch
// (RFC 7386) of the form {"status": {...}}: a member sets a field, null
// removes it, fields not named stay as stored. The patch is applied through
// PatchStatus, to the stored status as it is at each attempt, so a writer
// sends only the fields it owns and keeps everyone else's. Allocated
// fields are kept; a patch that changes nothing writes nothing. A patch
// with members other than status, or with fields or values the kind's
// status does not take, is refused with a BadRequest naming their paths.
func (r *Registry) MergePatchStatus(ctx context.Context, ref apiv1.Ref, patch []byte) (apiv1.Object, error) {
	ki, ok := apiv1.LookupKind(ref.Kind)
	if !ok {
		return nil, apiv1.NewBadRequest("unknown kind %q", ref.Kind)
	}
	status, ok, err := statusPatch(ki, patch)
	if err != nil {
		return nil, err
	}
	var mergeErr error
	out, err := r.patchStatus(ctx, ref, syncAnswers, func(next apiv1.Object) bool {
		if !ok {
			return false // no status member: nothing to change
		}
		changed, err := mergeStatus(next, status)
		mergeErr = err
		return changed
	})
	if err == nil && mergeErr != nil {
		return nil, mergeErr
	}
	return out, err
}

// statusPatch checks a merge patch of kind ki's status and returns the
// value of its status member, if it has one.
func statusPatch(ki apiv1.KindInfo, patch []byte) (status any, ok bool, err error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(patch, &doc); err != nil || doc == nil {
		return nil, false, apiv1.NewBadRequest(`merge patch: want a JSON object {"status": {...}}`)
	}
	var others []string
	for k := range doc {
		if k != "status" {
			others = append(others, strconv.Quote(k))
		}
	}
	if len(others) > 0 {
		slices.Sort(others)
		return nil, false, apiv1.NewBadRequest("merge patch: only status can be patched here, not %s", strings.Join(others, ", "))
	}
	if !reflect.ValueOf(ki.New()).Elem().FieldByName("Status").IsValid() {
		return nil, false, apiv1.NewBadRequest("%s has no status", ki.Kind)
	}
	raw, ok := doc["status"]
	if !ok {
		return nil, false, nil
	}
	// Decoded as the API decodes a request body: unknown fields and
	// mistyped values are named by their paths; null (remove) is allowed.
	check, err := json.Marshal(map[string]any{"apiVersion": apiv1.APIVersion, "kind": ki.Kind, "status": raw})
	if err != nil {
		return nil, false, apiv1.NewBadRequest("merge patch: %v", err)
	}
	if _, err := apiv1.DecodeObject(check); err != nil {
		return nil, false, apiv1.NewBadRequest("merge patch: %v", err)
	}
	if status, err = apiv1.DecodeJSONValue(raw); err != nil {
		return nil, false, apiv1.NewBadRequest("merge patch: %v", err)
	}
	return status, true, nil
}

// mergeStatus applies the merge patch of a status to next's status,
// keeping its allocated fields, and reports whether that changed it.
func mergeStatus(next apiv1.Object, patch any) (bool, error) {
	obj := reflect.ValueOf(next).Elem()
	status := obj.FieldByName("Status")
	cur, err := json.Marshal(status.Interface())
	if err != nil {
		return false, fmt.Errorf("merge patch: encode the status of %s: %w", apiv1.RefOf(next), err)
	}
	doc, err := apiv1.DecodeJSONValue(cur)
	if err != nil {
		return false, fmt.Errorf("merge patch: decode the status of %s: %w", apiv1.RefOf(next), err)
	}
	merged, err := json.Marshal(apiv1.MergePatch(doc, patch))
	if err != nil {
		return false, fmt.Errorf("merge patch: encode the status of %s: %w", apiv1.RefOf(next), err)
	}
	v := reflect.New(status.Type())
	if err := json.Unmarshal(merged, v.Interface()); err != nil {
		return false, apiv1.NewBadRequest("merge patch: %v", err)
	}
	old := reflect.New(obj.Type())
	old.Elem().Set(obj) // shallow: the status is replaced, not modified
	status.Set(v.Elem())
	keepAllocations(next, old.Interface().(apiv1.Object))
	return !reflect.DeepEqual(status.Interface(), old.Elem().FieldByName("Status").Interface()), nil
}

// PatchStatus changes an object's status with patch, applied to a copy of
// the stored object as it is when the write is attempted (again if a
// concurrent write wins): a writer changes only the fields it owns and
// keeps everyone else's. patch must replace, not modify in place, any map
// or slice of the status (the copy shares them with the cache) and returns
// false when nothing needs writing; PatchStatus then returns the stored
// object unchanged. Spec, metadata and allocated status fields are kept; a
// status that apiv1.ValidateStatus refuses is refused (Invalid).
//
// PatchStatus is for the controller's own status writers: unlike the
// API's writes, its answers from the cache (not found, nothing to change)
// are not made current with a Sync (see the package documentation).
func (r *Registry) PatchStatus(ctx context.Context, ref apiv1.Ref, patch func(next apiv1.Object) bool) (apiv1.Object, error) {
	return r.patchStatus(ctx, ref, cached, patch)
}

// patchStatus is PatchStatus with the freshness of its answers (see run).
func (r *Registry) patchStatus(ctx context.Context, ref apiv1.Ref, f freshness, patch func(next apiv1.Object) bool) (apiv1.Object, error) {
	if _, ok := apiv1.LookupKind(ref.Kind); !ok {
		return nil, apiv1.NewBadRequest("unknown kind %q", ref.Kind)
	}
	objKey := r.st.ObjectKey(ref)
	// Status writers of one object (liveness, the config stream, agents)
	// race. On this replica they take turns: racing, each would fail the
	// others' compares, and the one that just won, planning its next patch
	// first, could starve the rest. A write that loses to another replica
	// is cheap to plan again.
	unlock, err := r.statusLocks.lock(ctx, objKey)
	if err != nil {
		return nil, storeError(err)
	}
	defer unlock()
	a, rev, err := r.runN(ctx, statusAttempts, f, func() (*attempt, error) {
		old, ok := r.st.Get(ref.Kind, ref.Tenant, ref.Name)
		if !ok {
			return nil, apiv1.NewNotFound(ref)
		}
		// Shallow copies: patch sees the whole object, but only its
		// status is taken, onto a copy whose spec and metadata are old's.
		shallow := func() reflect.Value {
			v := reflect.New(reflect.TypeOf(old).Elem())
			v.Elem().Set(reflect.ValueOf(old).Elem())
			return v
		}
		patched, v := shallow(), shallow()
		if !v.Elem().FieldByName("Status").IsValid() {
			return nil, apiv1.NewBadRequest("%s has no status", ref.Kind)
		}
		if !patch(patched.Interface().(apiv1.Object)) {
			return &attempt{obj: old, noop: true}, nil
		}
		v.Elem().FieldByName("Status").Set(patched.Elem().FieldByName("Status"))
		next := v.Interface().(apiv1.Object)
		keepAllocations(next, old)
		if ep, ok := next.(*apiv1.Endpoint); ok {
			apiv1.SetEndpointReady(ep, r.cfg.Now())
		}
		if errs := apiv1.ValidateStatus(next); len(errs) > 0 {
			return nil, apiv1.NewInvalid(ref, errs)
		}
		next.GetObjectMeta().ResourceVersion = ""
		oldRev, _ := strconv.ParseInt(old.GetObjectMeta().ResourceVersion, 10, 64)
		val, err := encode(next)
		if err != nil {
			return nil, err
		}
		a := &attempt{obj: next}
		a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.ModRevision(objKey), "=", oldRev))
		a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(objKey, val))
		return a, nil
	})
	if err != nil {
		return nil, err
	}
	if a.noop {
		return a.obj, nil
	}
	a.obj.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
	return a.obj, nil
}

// objectLocks are locks by etcd key, held in memory while in use.
type objectLocks struct {
	mu sync.Mutex
	m  map[string]*objectLock
}

type objectLock struct {
	token chan struct{} // holds a token while locked; waiters queue in order
	users int           // holders and waiters
}

// lock takes the lock of key, waiting at most until ctx ends; unlock
// releases it.
func (l *objectLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*objectLock{}
	}
	o := l.m[key]
	if o == nil {
		o = &objectLock{token: make(chan struct{}, 1)}
		l.m[key] = o
	}
	o.users++
	l.mu.Unlock()
	done := func() {
		l.mu.Lock()
		if o.users--; o.users == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
	select {
	case o.token <- struct{}{}:
		return func() { <-o.token; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}

// keepAllocations restores the status fields that the registry allocated
// (host ID, VNI, address, MAC, placement, identity) or derives (an
// endpoint's Ready condition): a status writer such as an agent or the
// liveness tracker reports observations and cannot change them.
func keepAllocations(next, old apiv1.Object) {
	switch n := next.(type) {
	case *apiv1.Host:
		n.Status.HostID = old.(*apiv1.Host).Status.HostID
	case *apiv1.VPC:
		n.Status.VNI = old.(*apiv1.VPC).Status.VNI
	case *apiv1.Subnet:
		n.Status.VNI = old.(*apiv1.Subnet).Status.VNI
	case *apiv1.Endpoint:
		o := old.(*apiv1.Endpoint).Status
		n.Status.IP, n.Status.MAC, n.Status.VNI, n.Status.Host = o.IP, o.MAC, o.VNI, o.Host
		n.Status.Identity = o.Identity
		conds := slices.DeleteFunc(slices.Clone(n.Status.Conditions), func(c apiv1.Condition) bool { return c.Type == apiv1.ConditionReady })
		if c := apiv1.FindCondition(o.Conditions, apiv1.ConditionReady); c != nil {
			conds = append(conds, *c)
		}
		n.Status.Conditions = conds
	}
}
