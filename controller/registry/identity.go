package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
)

// Security identities. Every endpoint gets the identity of its label set
// in its VPC, 1..MaxIdentity: endpoints of a VPC with equal labels share
// one, and each VPC numbers its label sets on its own. Three kinds of
// keys record them in etcd, written in the same transaction as the
// endpoint:
//
//   - identityKey(vpc, hash of the labels) → the identity, and
//     identityIDKey(vpc, identity) → the hash: a create compares that
//     neither exists, so that no label set gets two identities and no
//     identity two label sets, across replicas;
//   - identityRefKey(vpc, identity, endpoint), one per endpoint, put with
//     the endpoint and deleted with it (or when it is relabelled). An
//     endpoint reusing an identity adds only this key, and a compare that
//     the label set still has that identity.
//
// Identities without references are released by a sweep that every
// replica runs each Config.IdentityGCInterval: an identity found without
// references by two consecutive sweeps is deleted by a transaction that
// compares that it still has none (and still maps the same label set), so
// that a create reusing it concurrently wins or loses as a whole. The
// sweep keeps no state that matters: after a crash the next sweep of any
// replica finds what is left. A VPC that has used up its identities is
// swept at once, without waiting.
//
// A replica chooses identities from a table per VPC that it reads from
// etcd when it first writes an endpoint of the VPC, and keeps up to date
// with its own writes and with what failed transactions read (another
// replica's allocation or release): like the address pools, it may be
// stale, which costs a failed compare and a retry, never a duplicate.

// MaxIdentity is the largest security identity: packets carry the
// identity in the 16-bit group policy ID of VXLAN-GBP.
const MaxIdentity = 1<<16 - 1

// vpcKey names a VPC.
type vpcKey struct{ tenant, vpc string }

func (k vpcKey) String() string { return k.tenant + "/" + k.vpc }

// identities holds this replica's identity tables, by VPC.
type identities struct {
	mu sync.Mutex // guards m and every table
	m  map[vpcKey]*idTable
}

// idTable maps the label sets of a VPC to identities, as far as this
// replica knows.
type idTable struct {
	byHash map[string]uint32
	byID   map[uint32]string
	next   uint32 // the identity to try first: next fit, so that a released one is not reused at once
}

func newIDTable() *idTable {
	return &idTable{byHash: map[string]uint32{}, byID: map[uint32]string{}, next: 1}
}

// set records that hash has identity id, forgetting what either had.
func (t *idTable) set(hash string, id uint32) {
	if old, ok := t.byHash[hash]; ok && old != id {
		delete(t.byID, old)
	}
	if old, ok := t.byID[id]; ok && old != hash {
		delete(t.byHash, old)
	}
	t.byHash[hash], t.byID[id] = id, hash
}

// forget removes the mapping of hash to id, if the table has it.
func (t *idTable) forget(hash string, id uint32) {
	if t.byHash[hash] == id && t.byID[id] == hash {
		delete(t.byHash, hash)
		delete(t.byID, id)
	}
}

// allocate maps hash to a free identity, or reports that none is left.
func (t *idTable) allocate(hash string) (uint32, bool) {
	if len(t.byID) >= MaxIdentity {
		return 0, false
	}
	for id := t.next; ; id = id%MaxIdentity + 1 {
		if _, used := t.byID[id]; !used {
			t.set(hash, id)
			t.next = id%MaxIdentity + 1
			return id, true
		}
	}
}

// labelsHash names a label set in keys: the first 128 bits of the SHA-256
// of its pairs, sorted, as "key=value\n" (label keys hold no '=', values
// no newline).
func labelsHash(labels map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		h.Write([]byte(k + "=" + labels[k] + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// idTable returns the identity table of a VPC, reading it from etcd on
// first use.
func (r *Registry) idTable(ctx context.Context, k vpcKey) (*idTable, error) {
	r.ids.mu.Lock()
	t := r.ids.m[k]
	r.ids.mu.Unlock()
	if t != nil {
		return t, nil
	}
	return r.loadIDTable(ctx, k)
}

// loadIDTable reads the identities of a VPC from etcd and makes them the
// VPC's table.
func (r *Registry) loadIDTable(ctx context.Context, k vpcKey) (*idTable, error) {
	prefix := r.st.Key(identityPrefix(k))
	resp, err := r.st.Client().Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, storeError(fmt.Errorf("read the identities of VPC %s: %w", k, err))
	}
	t := newIDTable()
	for _, kv := range resp.Kvs {
		if id, ok := parseIdentity(kv.Value); ok {
			t.set(strings.TrimPrefix(string(kv.Key), prefix), id)
		}
	}
	r.ids.mu.Lock()
	defer r.ids.mu.Unlock()
	if r.ids.m == nil {
		r.ids.m = map[vpcKey]*idTable{}
	}
	r.ids.m[k] = t
	return t, nil
}

func parseIdentity(b []byte) (uint32, bool) {
	id, err := strconv.ParseUint(string(b), 10, 16)
	return uint32(id), err == nil && id != 0
}

// dropIDTable forgets the table of a deleted VPC.
func (r *Registry) dropIDTable(k vpcKey) {
	r.ids.mu.Lock()
	defer r.ids.mu.Unlock()
	delete(r.ids.m, k)
}

// planIdentity gives ep the identity of its label set in VPC vpc, the one
// the label set has or a free one, and adds to a's transaction the
// endpoint's reference and, for a new identity, its keys. Call it after
// a's diagnose and undo are set: it chains them.
func (r *Registry) planIdentity(ctx context.Context, a *attempt, ep *apiv1.Endpoint, vpc string) error {
	k := vpcKey{ep.Metadata.Tenant, vpc}
	t, err := r.idTable(ctx, k)
	if err != nil {
		return err
	}
	hash := labelsHash(ep.Metadata.Labels)
	id, fresh, ok := r.ids.take(t, hash)
	if !ok {
		// Used up, as far as this replica knows: release what no endpoint
		// uses, read the VPC's identities again and try once more.
		if err := r.sweepVPC(ctx, k, nil, nil); err != nil {
			return err
		}
		if t, err = r.loadIDTable(ctx, k); err != nil {
			return err
		}
		if id, fresh, ok = r.ids.take(t, hash); !ok {
			return apiv1.NewInvalid(apiv1.RefOf(ep), []apiv1.FieldError{{Field: "metadata.labels", Message: fmt.Sprintf(
				"VPC %s has %d distinct label sets, as many as it can tell apart (a security identity is 16 bits); "+
					"give the endpoint the labels of another endpoint of the VPC, or delete endpoints", k, MaxIdentity)}})
		}
	}
	ep.Status.Identity = id
	ik, dk := r.st.Key(identityKey(k, hash)), r.st.Key(identityIDKey(k, id))
	idText := strconv.FormatUint(uint64(id), 10)
	if fresh {
		a.txn.Compares = append(a.txn.Compares,
			clientv3.Compare(clientv3.CreateRevision(ik), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(dk), "=", 0))
		a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(ik, idText), clientv3.OpPut(dk, hash))
	} else {
		a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.Value(ik), "=", idText))
	}
	a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(r.st.Key(identityRefKey(k, id, ep.Metadata.Name)), ""))
	at := len(a.txn.Else)
	a.txn.Else = append(a.txn.Else, clientv3.OpGet(ik), clientv3.OpGet(dk))
	diagnose, undo := a.diagnose, a.undo
	confirmed := false // the failed transaction read that hash has id
	a.diagnose = func(res store.Result) error {
		if len(res.Else) >= at+2 {
			confirmed = r.learnIdentity(t, hash, id, res.Else[at], res.Else[at+1])
		}
		if diagnose != nil {
			return diagnose(res)
		}
		return nil
	}
	a.undo = func() {
		if undo != nil {
			undo()
		}
		if fresh && !confirmed {
			r.ids.mu.Lock()
			t.forget(hash, id)
			r.ids.mu.Unlock()
		}
	}
	return nil
}

// take returns the identity of hash in t, allocating one (fresh) if it has
// none; false if none is free.
func (ids *identities) take(t *idTable, hash string) (id uint32, fresh, ok bool) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if id, ok := t.byHash[hash]; ok {
		return id, false, true
	}
	id, ok = t.allocate(hash)
	return id, true, ok
}

// learnIdentity corrects t with what a failed transaction read of the
// label set hash (its identity key) and of identity id (its reservation),
// and reports whether hash has id.
func (r *Registry) learnIdentity(t *idTable, hash string, id uint32, byHash, byID *etcdserverpb.ResponseOp) bool {
	r.ids.mu.Lock()
	defer r.ids.mu.Unlock()
	has := false
	if kvs := rangeKVs(byHash); len(kvs) == 0 {
		if cur, ok := t.byHash[hash]; ok {
			t.forget(hash, cur) // released by another replica
		}
	} else if got, ok := parseIdentity(kvs[0].Value); ok {
		t.set(hash, got) // allocated by another replica
		has = got == id
	}
	if kvs := rangeKVs(byID); len(kvs) > 0 && string(kvs[0].Value) != hash {
		t.set(string(kvs[0].Value), id) // id is another label set's
	}
	return has
}

// planIdentityRelease deletes the reference of a deleted or relabelled
// endpoint to its identity, in a's transaction.
func (r *Registry) planIdentityRelease(a *attempt, ep *apiv1.Endpoint) {
	if ep.Status.Identity == 0 {
		return
	}
	if vpc, ok := r.vpcOfSubnet(ep.Metadata.Tenant, ep.Spec.Subnet); ok {
		k := vpcKey{ep.Metadata.Tenant, vpc}
		a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(identityRefKey(k, ep.Status.Identity, ep.Metadata.Name))))
	}
}

// idRef names an identity of a VPC.
type idRef struct {
	vpc vpcKey
	id  uint32
}

// sweepIdentities releases identities without references every
// IdentityGCInterval until ctx ends.
func (r *Registry) sweepIdentities(ctx context.Context) {
	tick := time.NewTicker(r.cfg.IdentityGCInterval)
	defer tick.Stop()
	var unused map[idRef]string // found by the last sweep, with their label set hashes
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		next := map[idRef]string{}
		for _, o := range r.st.List(apiv1.KindVPC, "") {
			m := o.GetObjectMeta()
			if err := r.sweepVPC(ctx, vpcKey{m.Tenant, m.Name}, unused, next); err != nil && ctx.Err() == nil {
				r.log.Warn("identity sweep failed", "vpc", m.Tenant+"/"+m.Name, "err", err)
			}
		}
		unused = next
	}
}

// sweepVPC releases the identities of a VPC that have no references and
// were in prev (all of them if prev is nil), and adds the others without
// references to next (if not nil).
func (r *Registry) sweepVPC(ctx context.Context, k vpcKey, prev, next map[idRef]string) error {
	cli, idPrefix, refPrefix := r.st.Client(), r.st.Key(identityIDPrefix(k)), r.st.Key(identityRefsOf(k))
	ids, err := cli.Get(ctx, idPrefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return storeError(err)
	}
	if len(ids.Kvs) == 0 {
		return nil
	}
	refs, err := cli.Get(ctx, refPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSerializable(),
		clientv3.WithRev(ids.Header.Revision))
	if err != nil {
		return storeError(err)
	}
	used := map[uint32]bool{}
	for _, kv := range refs.Kvs {
		idText, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), refPrefix), "/")
		if id, ok := parseIdentity([]byte(idText)); ok {
			used[id] = true
		}
	}
	for _, kv := range ids.Kvs {
		id, ok := parseIdentity([]byte(strings.TrimPrefix(string(kv.Key), idPrefix)))
		if !ok || used[id] {
			continue
		}
		ref, hash := idRef{k, id}, string(kv.Value)
		if prev != nil && prev[ref] != hash {
			if next != nil {
				next[ref] = hash
			}
			continue
		}
		if err := r.releaseIdentity(ctx, ref, hash); err != nil {
			return err
		}
	}
	return nil
}

// releaseIdentity deletes the keys of an identity if it still maps hash
// and still has no references.
func (r *Registry) releaseIdentity(ctx context.Context, ref idRef, hash string) error {
	ik, dk := r.st.Key(identityKey(ref.vpc, hash)), r.st.Key(identityIDKey(ref.vpc, ref.id))
	res, err := r.st.Commit(ctx, store.Txn{
		Compares: []clientv3.Cmp{
			clientv3.Compare(clientv3.Value(ik), "=", strconv.FormatUint(uint64(ref.id), 10)),
			clientv3.Compare(clientv3.Value(dk), "=", hash),
			clientv3.Compare(clientv3.CreateRevision(r.st.Key(identityRefPrefix(ref.vpc, ref.id))), "=", 0).WithPrefix(),
		},
		Ops: []clientv3.Op{clientv3.OpDelete(ik), clientv3.OpDelete(dk)},
	})
	if err != nil {
		return storeError(err)
	}
	if res.Succeeded {
		r.ids.mu.Lock()
		if t := r.ids.m[ref.vpc]; t != nil {
			t.forget(hash, ref.id)
		}
		r.ids.mu.Unlock()
		r.log.Debug("released identity", "vpc", ref.vpc.String(), "identity", ref.id)
	}
	return nil
}
