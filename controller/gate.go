package controller

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/quorum"
	"github.com/weftnet/weft/controller/rest"
	"github.com/weftnet/weft/controller/store"
)

// writeGate is the API's backend behind a quorum guard: while the replica
// cannot write (its etcd has no quorum, or is out of space) writes are
// refused at once with a 503 that says why, instead of each waiting for
// etcd's timeout. Deletes pass while etcd is only out of space: they are
// how space is freed.
//
// Gets and the answers of writes are linearizable, even though the
// registry reads the replica's cache, which may lag behind writes made
// through other replicas: a Get reads the cache once it holds every write
// etcd acknowledged before the Get began (store.Sync), so it needs a
// quorum too; a write whose answer may come from a stale cache (not found,
// already exists, or a success without a write because the cached object
// already matched) is run once more after a Sync. Lists and watches are
// served from the cache as it is, at the revision they report.
type writeGate struct {
	rest.Backend
	guard *quorum.Guard
	store *store.Store
}

// syncTimeout bounds a Get's wait for a current revision before the
// quorum guard has noticed a lost quorum.
const syncTimeout = 5 * time.Second

func (w writeGate) Get(ctx context.Context, ref apiv1.Ref) (apiv1.Object, error) {
	if err := w.guard.Err(); errors.Is(err, quorum.ErrNoQuorum) {
		return nil, unavailable("this replica cannot serve a current read: %v", err)
	}
	if err := w.sync(ctx); err != nil {
		return nil, err
	}
	return w.Backend.Get(ctx, ref)
}

// sync waits for the cache to hold every write acknowledged so far.
func (w writeGate) sync(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := w.store.Sync(sctx); err != nil {
		return unavailable("this replica cannot serve a current read: %v", err)
	}
	return nil
}

func unavailable(format string, args ...any) error {
	return apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, format, args...)
}

func (w writeGate) refuse(deleting bool) error {
	err := w.guard.Err()
	if err == nil || (deleting && errors.Is(err, quorum.ErrNoSpace)) {
		return nil
	}
	return unavailable("this replica refuses writes: %v", err)
}

// write runs do unless the replica refuses writes; when do's answer may
// come from a stale cache it runs do once more after a Sync. update says
// that a success may be an unchanged object (no write: its
// resourceVersion is no newer than the cache before the call).
func (w writeGate) write(ctx context.Context, deleting, update bool, do func() (apiv1.Object, error)) (apiv1.Object, error) {
	if err := w.refuse(deleting); err != nil {
		return nil, err
	}
	before := w.store.Revision()
	out, err := do()
	switch apiv1.ReasonOf(err) {
	case apiv1.ReasonNotFound, apiv1.ReasonAlreadyExists:
	default:
		if err != nil || !update || out == nil {
			return out, err
		}
		if rv, perr := strconv.ParseInt(out.GetObjectMeta().ResourceVersion, 10, 64); perr != nil || rv > before {
			return out, nil // written
		}
	}
	if err := w.sync(ctx); err != nil {
		return nil, err
	}
	return do()
}

func (w writeGate) Create(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	return w.write(ctx, false, false, func() (apiv1.Object, error) { return w.Backend.Create(ctx, obj, opts...) })
}

func (w writeGate) Update(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	return w.write(ctx, false, true, func() (apiv1.Object, error) { return w.Backend.Update(ctx, obj, opts...) })
}

func (w writeGate) UpdateStatus(ctx context.Context, obj apiv1.Object) (apiv1.Object, error) {
	return w.write(ctx, false, true, func() (apiv1.Object, error) { return w.Backend.UpdateStatus(ctx, obj) })
}

func (w writeGate) MergePatchStatus(ctx context.Context, ref apiv1.Ref, patch []byte) (apiv1.Object, error) {
	return w.write(ctx, false, true, func() (apiv1.Object, error) { return w.Backend.MergePatchStatus(ctx, ref, patch) })
}

func (w writeGate) Delete(ctx context.Context, ref apiv1.Ref, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	return w.write(ctx, true, false, func() (apiv1.Object, error) { return w.Backend.Delete(ctx, ref, opts...) })
}
