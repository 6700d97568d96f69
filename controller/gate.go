package controller

import (
	"context"
	"errors"
	"net/http"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/quorum"
	"github.com/weftnet/weft/controller/rest"
)

// writeGate is the API's backend behind a quorum guard: while the replica
// cannot write (its etcd has no quorum, or is out of space) writes are
// refused at once with a 503 that says why, instead of each waiting for
// etcd's timeout. Deletes pass while etcd is only out of space: they are
// how space is freed. Gets, which need a quorum read to be current (the
// registry makes them linearizable), are refused at once too while the
// guard has lost the quorum.
type writeGate struct {
	rest.Backend
	guard *quorum.Guard
}

func (w writeGate) Get(ctx context.Context, ref apiv1.Ref) (apiv1.Object, error) {
	if err := w.guard.Err(); errors.Is(err, quorum.ErrNoQuorum) {
		return nil, unavailable("this replica cannot serve a current read: %v", err)
	}
	return w.Backend.Get(ctx, ref)
}

func unavailable(format string, args ...any) error {
	return apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, format, args...)
}

// refuse returns the 503 of a write while the replica refuses writes.
func (w writeGate) refuse(deleting bool) error {
	err := w.guard.Err()
	if err == nil || (deleting && errors.Is(err, quorum.ErrNoSpace)) {
		return nil
	}
	return unavailable("this replica refuses writes: %v", err)
}

func (w writeGate) Create(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	if err := w.refuse(false); err != nil {
		return nil, err
	}
	return w.Backend.Create(ctx, obj, opts...)
}

func (w writeGate) Update(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	if err := w.refuse(false); err != nil {
		return nil, err
	}
	return w.Backend.Update(ctx, obj, opts...)
}

func (w writeGate) UpdateStatus(ctx context.Context, obj apiv1.Object) (apiv1.Object, error) {
	if err := w.refuse(false); err != nil {
		return nil, err
	}
	return w.Backend.UpdateStatus(ctx, obj)
}

func (w writeGate) MergePatchStatus(ctx context.Context, ref apiv1.Ref, patch []byte) (apiv1.Object, error) {
	if err := w.refuse(false); err != nil {
		return nil, err
	}
	return w.Backend.MergePatchStatus(ctx, ref, patch)
}

func (w writeGate) Delete(ctx context.Context, ref apiv1.Ref, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	if err := w.refuse(true); err != nil {
		return nil, err
	}
	return w.Backend.Delete(ctx, ref, opts...)
}
