// Package registry is the controller's write path: it turns an API request
// into one etcd transaction. For every create, update and delete it
// defaults and validates the object against the store's index, allocates
// what the object needs (a VNI for a VPC, an address for an endpoint) and
// commits the object together with its reservation and reference records,
// guarded by compares, so that etcd itself guarantees that no VNI or
// address is handed out twice and that nothing is deleted while something
// still refers to it — also across controller crashes and replicas.
//
// Reads (Get, List, Watch) are served from the store's watch-fed cache.
// Every write waits until the cache has applied its revision before it
// returns, so a client reads its own writes.
//
// Get and every answer of a write are linearizable, although the cache
// may lag behind writes made through other replicas: an answer that a
// committed transaction decided is current by itself (etcd evaluated its
// compares); an answer read from the cache (Get, not found, already
// exists, nothing to change, a dry run, a refusal) is given only from a
// cache that holds every write acknowledged before the call: one that
// store.Sync brought up to a quorum-read revision, or that has applied a
// failed transaction of the call. Lists and watches are served from the
// cache as it is, at the revision they report. Internal status writers
// (PatchStatus) skip the Sync: they answer no client.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/alloc"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
)

// maxAttempts bounds how often one request retries a transaction that lost
// a race (a stale cache, an address taken by another replica).
const maxAttempts = 8

// statusAttempts is maxAttempts for status patches.
const statusAttempts = 64

// admissionAttempts is maxAttempts for writes that take turns (see
// serialize): they lose only to other replicas.
const admissionAttempts = 64

// Config configures a Registry.
type Config struct {
	Store  *store.Store
	Logger *slog.Logger
	// VNIMin and VNIMax bound the VNIs handed to VPCs (default 4096..16777215).
	VNIMin, VNIMax uint32
	// BlockSize is the number of addresses in a per-host allocation block (default 16).
	BlockSize int
	// Now returns the time for creationTimestamp (default time.Now).
	Now func() time.Time
	// HostDeleteOps, if set, returns more deletes for the transaction that
	// deletes a Host: its credentials (package hostkey).
	HostDeleteOps func(h *apiv1.Host) []clientv3.Op
	// IdentityGCInterval is how often the security identities that no
	// endpoint uses are looked for; one is released when two looks in a
	// row found it unused (default 5 minutes).
	IdentityGCInterval time.Duration
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.VNIMin == 0 {
		c.VNIMin = 4096
	}
	if c.VNIMax == 0 {
		c.VNIMax = 1<<24 - 1
	}
	if c.BlockSize == 0 {
		c.BlockSize = 16
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.IdentityGCInterval == 0 {
		c.IdentityGCInterval = 5 * time.Minute
	}
}

// Validate reports a missing or inconsistent setting.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("registry: Store is required")
	}
	if c.VNIMin == 0 || c.VNIMin > c.VNIMax || c.VNIMax > 1<<24-1 {
		return fmt.Errorf("registry: VNI range %d..%d: want 1 <= min <= max <= 16777215", c.VNIMin, c.VNIMax)
	}
	return nil
}

// Registry validates, allocates and commits API objects.
type Registry struct {
	cfg     Config
	st      *store.Store
	log     *slog.Logger
	vnis    *alloc.VNIs
	hostIDs *alloc.IDs
	// pools holds the address pools of the subnets that this replica has
	// allocated in; see pools.go.
	pools subnetPools
	// ids holds the identity tables of the VPCs that this replica has
	// written endpoints in; see identity.go.
	ids identities
	// hostHigh and vniHigh are the highest host ID and VNI observed (the
	// follow goroutine's, and Start's before it runs).
	hostHigh, vniHigh uint32
	hooks             testHooks
	// statusLocks serialise the status writes of each object (status.go).
	statusLocks objectLocks
	// writeLocks serialise the writes that need admission and the counted
	// creates of tenants with quotas (admission.go, quota.go).
	writeLocks objectLocks
	life       lifecycle.Group
}

// testHooks let tests act at points of interest; all nil outside tests.
type testHooks struct {
	// poolSnapshot runs when buildPool has read a subnet's endpoints at
	// revision rev, before it registers the pool.
	poolSnapshot func(rev int64)
	// planned runs when a write is planned, before it commits.
	planned func()
}

// New returns a Registry; call Start before serving requests.
func New(cfg Config) (*Registry, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	vnis, err := alloc.NewVNIs(cfg.VNIMin, cfg.VNIMax)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	hostIDs, err := alloc.NewIDs(1, alloc.MaxVNI)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return &Registry{
		cfg:     cfg,
		st:      cfg.Store,
		log:     cfg.Logger.With("subsystem", "registry"),
		vnis:    vnis,
		hostIDs: hostIDs,
	}, nil
}

// Start seeds the VNI and host ID allocators from the store (which must be
// started) and follows the store's events until Close, so that
// allocations made by other replicas, and releases of deleted objects,
// reach this replica's allocators. Address pools are built on first use
// (see pools.go).
func (r *Registry) Start(context.Context) error {
	if _, err := r.life.Start(); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	rev := r.st.Revision()
	r.load(rev)
	r.life.Go(func(ctx context.Context) {
		_ = store.Follow(ctx, r.st, store.FollowConfig{Name: "registry", From: rev,
			OnEvents: func(evs []store.Event) {
				for _, ev := range evs {
					r.observe(ev)
				}
			},
			OnReset: r.reset, Logger: r.log})
	})
	r.life.Go(r.sweepIdentities)
	return nil
}

// Close stops following the store and waits. It is idempotent.
func (r *Registry) Close() error { return r.life.Close() }

// load reserves the host IDs and VNIs that the stored Hosts and VPCs hold.
func (r *Registry) load(rev int64) {
	for _, kind := range []string{apiv1.KindHost, apiv1.KindVPC} {
		for _, o := range r.st.List(kind, "") {
			r.observe(store.Event{Type: store.EventAdded, Object: o, Revision: rev})
		}
	}
}

// reset brings the allocators in line with the store after the events
// since the last one observed were lost (compacted): the host IDs and VNIs
// are loaded again, and every address pool is dropped, to be rebuilt on
// next use. (A write of this replica that takes an ID meanwhile may take
// one in use: etcd's compare on the ID's reservation refuses it, and the
// write retries.)
func (r *Registry) reset(_ []apiv1.Object, rev int64) {
	releaseTo(r.hostIDs, r.hostHigh)
	releaseTo(r.vnis, r.vniHigh)
	r.load(rev)
	r.resetPools()
}

// releaseTo releases every ID of ids up to high.
func releaseTo(ids *alloc.VNIs, high uint32) {
	for id, _ := ids.Range(); id <= high; id++ {
		ids.Release(id)
	}
}

// observe keeps the allocators in step with the stored state. Replaying a
// host or VPC event changes nothing; endpoint events change only pools
// older than the event (see observeEndpoint).
func (r *Registry) observe(ev store.Event) {
	switch o := ev.Object.(type) {
	case *apiv1.Host:
		observeID(r.hostIDs, &r.hostHigh, o.Status.HostID, ev.Type == store.EventDeleted)
	case *apiv1.VPC:
		observeID(r.vnis, &r.vniHigh, o.Status.VNI, ev.Type == store.EventDeleted)
		if ev.Type == store.EventDeleted {
			r.dropIDTable(vpcKey{o.Metadata.Tenant, o.Metadata.Name})
		}
	case *apiv1.Subnet:
		if ev.Type == store.EventDeleted {
			r.pools.forget(subnetKey{o.Metadata.Tenant, o.Metadata.Name}, ev.Revision)
		}
	case *apiv1.Endpoint:
		r.observeEndpoint(ev, o)
	}
}

// observeID applies to ids a change of an object that holds id (0: none
// yet); high is the highest ID observed.
func observeID(ids *alloc.VNIs, high *uint32, id uint32, deleted bool) {
	switch {
	case id == 0:
	case deleted:
		ids.Release(id)
	default:
		*high = max(*high, id)
		_ = ids.Reserve(id) // ErrInUse: already known
	}
}

// ---- reads ----

// Get returns one object from the cache, once the cache holds every write
// acknowledged before the call (see the package documentation).
func (r *Registry) Get(ctx context.Context, ref apiv1.Ref) (apiv1.Object, error) {
	if err := r.current(ctx); err != nil {
		return nil, err
	}
	o, ok := r.st.Get(ref.Kind, ref.Tenant, ref.Name)
	if !ok {
		return nil, apiv1.NewNotFound(ref)
	}
	return o, nil
}

// List returns the objects of a kind in a tenant ("" = all tenants) that
// match sel, and the cache revision they were read at.
func (r *Registry) List(ctx context.Context, kind, tenant string, sel apiv1.LabelSelector) ([]apiv1.Object, int64) {
	return r.Select(ctx, kind, tenant, sel, nil)
}

// current waits until the cache holds every write acknowledged before the
// call (store.Sync), so that an answer read from it is linearizable.
func (r *Registry) current(ctx context.Context) error {
	if err := r.st.Sync(ctx); err != nil {
		return apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, "this replica cannot serve a current read: %v", err)
	}
	return nil
}

// Select is List of the objects that match both a label selector and a
// field selector, sorted by tenant and name. The field selector is served
// from the store's indexes where one fits: an endpoint's spec.host and
// (within a tenant) spec.subnet, a subnet's spec.vpc, a name.
func (r *Registry) Select(_ context.Context, kind, tenant string, labels apiv1.LabelSelector, fields apiv1.FieldSelector) ([]apiv1.Object, int64) {
	rev := r.st.Revision()
	ki, ok := apiv1.LookupKind(kind)
	if !ok {
		return nil, rev
	}
	if t, ok := fields.Equals("metadata.tenant"); ok && ki.Namespaced {
		if tenant != "" && t != tenant {
			return nil, rev
		}
		tenant = t
	}
	var objs []apiv1.Object
	name, byName := fields.Equals("metadata.name")
	host, byHost := fields.Equals("spec.host")
	subnet, bySubnet := fields.Equals("spec.subnet")
	vpc, byVPC := fields.Equals("spec.vpc")
	switch {
	case byName && (tenant != "" || !ki.Namespaced):
		if o, ok := r.st.Get(ki.Kind, tenant, name); ok {
			objs = []apiv1.Object{o}
		}
	case ki.Kind == apiv1.KindEndpoint && byHost:
		objs = endpoints(r.st.EndpointsByHost(host))
	case ki.Kind == apiv1.KindEndpoint && bySubnet && tenant != "":
		objs = endpoints(r.st.EndpointsBySubnet(tenant, subnet))
	case ki.Kind == apiv1.KindSubnet && byVPC && tenant != "":
		for _, sn := range r.st.SubnetsByVPC(tenant, vpc) {
			objs = append(objs, sn)
		}
	default:
		// The objects and the revision they are at, together: a list's
		// next pages are read at that revision (ListPage).
		objs, rev = r.st.ListSelector(ki.Kind, tenant, nil)
		if labels.Empty() && len(fields) == 0 {
			return objs, rev
		}
	}
	out := objs[:0:0]
	for _, o := range objs {
		m := o.GetObjectMeta()
		if (tenant == "" || m.Tenant == tenant || !ki.Namespaced) && labels.Matches(m.Labels) && fields.Matches(o) {
			out = append(out, o)
		}
	}
	return out, rev
}

// ListPage reads a page of a list. The first (q.Rev 0) is read from the
// cache, at its revision (store.ListHead); a next one, of a list begun at
// q.Rev, from etcd at that revision (store.ListAt). A page costs what it
// reads, not the size of the kind, and every page of a list shows the
// same revision. A compacted q.Rev gives an error wrapping
// store.ErrCompacted.
func (r *Registry) ListPage(ctx context.Context, q store.PageQuery) (store.Page, error) {
	if q.Rev == 0 {
		return r.st.ListHead(ctx, q)
	}
	return r.st.ListAt(ctx, q)
}

func endpoints(eps []*apiv1.Endpoint) []apiv1.Object {
	out := make([]apiv1.Object, len(eps))
	for i, e := range eps {
		out[i] = e
	}
	return out
}

// Watch streams changes of a kind in a tenant after fromRev.
func (r *Registry) Watch(ctx context.Context, kind, tenant string, fromRev int64) (<-chan store.Event, error) {
	return r.st.Watch(ctx, kind, tenant, fromRev)
}

// Revision returns the revision the cache has applied.
func (r *Registry) Revision() int64 { return r.st.Revision() }

// ---- writes ----

// attempt is one try at a write: the transaction and what to do with its outcome.
type attempt struct {
	txn store.Txn
	// diagnose explains a failed transaction from its Else reads: a final
	// error, or nil to retry (after the cache caught up).
	diagnose func(res store.Result) error
	// undo gives back in-memory allocations of a transaction that did not commit.
	undo func()
	// obj is the object that the transaction writes (nil for deletes).
	obj apiv1.Object
	// noop: nothing to write; run returns obj without a transaction.
	noop bool
	// dryRun: run gives back what plan allocated (undo) and returns obj
	// without a transaction.
	dryRun bool
}

// run plans and commits a write, retrying lost races. plan is called
// afresh for every attempt so that it sees the cache at least at the
// revision of the previous failure. An answer that plan gives from the
// cache alone (an error, a no-op) is made current first: plan runs again
// after a store.Sync, unless a failed transaction of this call already
// brought the cache past the call's start.
func (r *Registry) run(ctx context.Context, dryRun bool, plan func() (*attempt, error)) (*attempt, int64, error) {
	return r.runN(ctx, maxAttempts, freshnessOf(dryRun), plan)
}

// freshness is how run makes the answers it gives from the cache current.
type freshness int

const (
	// syncAnswers: a Sync before an answer from the cache, and plan again.
	syncAnswers freshness = iota
	// syncFirst: a Sync before the first plan, for dry runs (every answer
	// is from the cache; planning twice would allocate twice).
	syncFirst
	// cached: no Sync, for writers that answer no client.
	cached
)

// freshnessOf is the freshness of an API write.
func freshnessOf(dryRun bool) freshness {
	if dryRun {
		return syncFirst
	}
	return syncAnswers
}

// runN is run with at most n attempts and the given freshness.
func (r *Registry) runN(ctx context.Context, n int, f freshness, plan func() (*attempt, error)) (*attempt, int64, error) {
	synced := f == cached
	if f == syncFirst {
		if err := r.current(ctx); err != nil {
			return nil, 0, err
		}
		synced = true
	}
	for i := 0; i < n; i++ {
		a, err := plan()
		if !synced && (err != nil || a.noop) {
			synced = true
			if err := r.current(ctx); err != nil {
				return nil, 0, err
			}
			a, err = plan()
		}
		if err != nil {
			return nil, 0, err
		}
		if a.noop {
			return a, 0, nil
		}
		if a.dryRun {
			if a.undo != nil {
				a.undo()
			}
			return a, 0, nil
		}
		if h := r.hooks.planned; h != nil {
			h()
		}
		res, err := r.st.Commit(ctx, a.txn)
		if err != nil {
			if a.undo != nil {
				a.undo()
			}
			return nil, 0, storeError(err)
		}
		if res.Succeeded {
			// Committed and durable. Wait until the cache shows it, so the
			// caller reads its own write; if that wait fails (ctx ended) the
			// write still stands, so it is reported as done.
			_ = r.st.WaitForRevision(ctx, res.Revision)
			return a, res.Revision, nil
		}
		// Diagnose before undoing: the diagnosis tells undo what to keep
		// (an address that another replica holds stays marked used).
		var final error
		if a.diagnose != nil {
			final = a.diagnose(res)
		}
		if a.undo != nil {
			a.undo()
		}
		if final != nil {
			return nil, 0, final
		}
		if err := r.st.WaitForRevision(ctx, res.Revision); err != nil {
			return nil, 0, storeError(err)
		}
		synced = true // the cache holds res.Revision, read after the call began
	}
	return nil, 0, apiv1.NewConflict("gave up after %d attempts: the objects involved kept changing; retry", n)
}

func storeError(err error) error {
	var se *apiv1.StatusError
	if errors.As(err, &se) {
		return se
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return apiv1.NewStatus(http.StatusGatewayTimeout, apiv1.ReasonTimeout, "storage did not answer in time: %v", err)
	}
	return apiv1.NewStatus(http.StatusServiceUnavailable, apiv1.ReasonUnavailable, "storage unavailable: %v", err)
}

// Create stores a new object and returns it as stored (with
// apiv1.WithDryRun, as it would be stored, and stores nothing).
func (r *Registry) Create(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	dryRun := apiv1.NewWriteOptions(opts...).DryRun
	ki, err := kindOf(obj)
	if err != nil {
		return nil, err
	}
	apiv1.Default(obj)
	meta := obj.GetObjectMeta()
	meta.ResourceVersion = ""
	meta.UID = newUID()
	meta.Generation = 1
	meta.CreationTimestamp = r.cfg.Now().UTC().Format(time.RFC3339)
	clearStatus(obj)
	ref := apiv1.RefOf(obj)
	objKey := r.st.ObjectKey(ref)
	reqVPC := vpcOf(obj)
	unlock, attempts, err := r.serialize(ctx, obj, true)
	if err != nil {
		return nil, err
	}
	defer unlock()

	a, rev, err := r.runN(ctx, attempts, freshnessOf(dryRun), func() (*attempt, error) {
		cacheRev := r.st.Revision()
		r.defaultRefs(obj, nil, reqVPC)
		if err := apiv1.ValidateCreate(obj, r.st); err != nil {
			return nil, err
		}
		if _, ok := r.st.Get(ref.Kind, ref.Tenant, ref.Name); ok {
			return nil, apiv1.NewAlreadyExists(ref)
		}
		a := &attempt{obj: obj, dryRun: dryRun}
		a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.CreateRevision(objKey), "=", 0))
		a.txn.Else = append(a.txn.Else, clientv3.OpGet(objKey, clientv3.WithKeysOnly()))
		if ki.Namespaced {
			if err := r.planTenant(a, obj, cacheRev); err != nil {
				return nil, err
			}
		}
		alreadyExists := func(res store.Result) bool { return len(res.Else) > 0 && rangeCount(res.Else[0]) > 0 }
		a.diagnose = func(res store.Result) error {
			if alreadyExists(res) {
				return apiv1.NewAlreadyExists(ref)
			}
			return nil
		}
		switch o := obj.(type) {
		case *apiv1.Host:
			if err := r.planHostCreate(a, o); err != nil {
				return nil, err
			}
		case *apiv1.VPC:
			if err := r.planVPCCreate(a, o); err != nil {
				return nil, err
			}
		case *apiv1.Subnet:
			r.planSubnetCreate(a, o, cacheRev)
		case *apiv1.Endpoint:
			if r.involvesMinimum(o) {
				if err := r.admit(o.Spec.Host, overrides{ep: o}, ref, "spec.host"); err != nil {
					return nil, err
				}
				r.planAdmission(a, cacheRev)
			}
			if err := r.planEndpointCreate(ctx, a, o, alreadyExists); err != nil {
				return nil, err
			}
		case *apiv1.SecurityPolicy:
			r.planVPCUse(a, o, "")
		case *apiv1.AppIntent:
			r.planVPCUse(a, o, "")
			if err := r.admitWrite(a, nil, o, cacheRev); err != nil {
				return nil, err
			}
		case *apiv1.QoSClass:
			if err := r.admitWrite(a, nil, o, cacheRev); err != nil {
				return nil, err
			}
		}
		val, err := encode(obj)
		if err != nil {
			return nil, err
		}
		a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(objKey, val))
		return a, nil
	})
	if err != nil {
		return nil, err
	}
	out := a.obj
	if dryRun {
		return out, nil
	}
	out.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
	r.log.Debug("created", "ref", ref.String(), "rev", rev)
	return out, nil
}

// vpcOf returns the spec.vpc of a SecurityPolicy or AppIntent, else "".
func vpcOf(o apiv1.Object) string {
	switch o := o.(type) {
	case *apiv1.SecurityPolicy:
		return o.Spec.VPC
	case *apiv1.AppIntent:
		return o.Spec.VPC
	}
	return ""
}

// defaultRefs applies apiv1.DefaultRefs to o, starting again from the
// requested spec.vpc (req) at each attempt, so that a retry reads the
// cache afresh; planVPCUse makes the write conditional on the VPC chosen.
func (r *Registry) defaultRefs(o, old apiv1.Object, req string) {
	switch o := o.(type) {
	case *apiv1.SecurityPolicy:
		o.Spec.VPC = req
	case *apiv1.AppIntent:
		o.Spec.VPC = req
	default:
		return
	}
	apiv1.DefaultRefs(o, old, r.st)
}

// planVPCUse makes the write of a SecurityPolicy or AppIntent conditional
// on its VPC's existence and records that it uses the VPC, so that the
// VPC's delete compares it away; oldVPC is the stored object's.
func (r *Registry) planVPCUse(a *attempt, o apiv1.Object, oldVPC string) {
	m, vpc := o.GetObjectMeta(), vpcOf(o)
	ki, _ := apiv1.LookupKind(o.GetTypeMeta().Kind)
	if oldVPC != "" && oldVPC != vpc {
		a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(vpcUseKey(m.Tenant, oldVPC, ki.Plural, m.Name))))
	}
	a.txn.Compares = append(a.txn.Compares, r.exists(apiv1.KindVPC, m.Tenant, vpc))
	a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(r.st.Key(vpcUseKey(m.Tenant, vpc, ki.Plural, m.Name)), ""))
}

// exists compares that an object exists.
func (r *Registry) exists(kind, tenant, name string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(r.st.ObjectKey(apiv1.Ref{Kind: kind, Tenant: tenant, Name: name})), ">", 0)
}

// noneUnder compares that no key exists below a prefix.
func (r *Registry) noneUnder(suffix string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(r.st.Key(suffix)), "=", 0).WithPrefix()
}

func (r *Registry) planVPCCreate(a *attempt, o *apiv1.VPC) error {
	vni, err := r.vnis.Allocate()
	if err != nil {
		return apiv1.NewStatus(http.StatusInsufficientStorage, apiv1.ReasonConflict, "no free VNI: %v", err)
	}
	o.Status.VNI = vni
	k := r.st.Key(vniKey(vni))
	a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
	a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(k, o.Metadata.Tenant+"/"+o.Metadata.Name))
	a.txn.Else = append(a.txn.Else, clientv3.OpGet(k, clientv3.WithKeysOnly()))
	// Releasing a VNI that another replica holds is harmless: the etcd
	// reservation key, not this bitmap, decides; the watch marks it again.
	a.undo = func() { r.vnis.Release(vni) }
	return nil
}

func (r *Registry) planHostCreate(a *attempt, o *apiv1.Host) error {
	id, err := r.hostIDs.Allocate()
	if err != nil {
		return apiv1.NewStatus(http.StatusInsufficientStorage, apiv1.ReasonConflict, "no free host ID: %v", err)
	}
	o.Status.HostID = id
	k := r.st.Key(hostIDKey(id))
	a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
	a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(k, o.Metadata.Name))
	a.undo = func() { r.hostIDs.Release(id) }
	return nil
}

func (r *Registry) planSubnetCreate(a *attempt, o *apiv1.Subnet, cacheRev int64) {
	vpc, _ := r.st.Get(apiv1.KindVPC, o.Metadata.Tenant, o.Spec.VPC)
	if v, ok := vpc.(*apiv1.VPC); ok {
		o.Status.VNI = v.Status.VNI
	}
	t := o.Metadata.Tenant
	a.txn.Compares = append(a.txn.Compares,
		r.exists(apiv1.KindVPC, t, o.Spec.VPC),
		// No subnet of this VPC was written after the revision that
		// validation (overlap check) read: concurrent overlapping creates
		// cannot both pass.
		clientv3.Compare(clientv3.ModRevision(r.st.Key(subnetRefPrefix(t, o.Spec.VPC))), "<", cacheRev+1).WithPrefix(),
	)
	a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(r.st.Key(subnetRefKey(t, o.Spec.VPC, o.Metadata.Name)), ""))
}

func (r *Registry) planEndpointCreate(ctx context.Context, a *attempt, o *apiv1.Endpoint, alreadyExists func(store.Result) bool) error {
	t, name := o.Metadata.Tenant, o.Metadata.Name
	p, err := r.pool(t, o.Spec.Subnet)
	if errors.Is(err, errSubnetChanging) {
		return apiv1.NewConflict("%v; retry", err)
	}
	if err != nil {
		return apiv1.NewInvalid(apiv1.RefOf(o), []apiv1.FieldError{{Field: "spec.subnet", Message: err.Error()}})
	}
	var ip netip.Addr
	// taken is set by diagnose when another endpoint holds ip in etcd: undo
	// then keeps it marked used, which is the truth.
	taken := false
	static := o.Spec.IP != ""
	if static {
		ip, err = netip.ParseAddr(o.Spec.IP)
		if err != nil {
			return apiv1.NewInvalid(apiv1.RefOf(o), []apiv1.FieldError{{Field: "spec.ip", Message: err.Error()}})
		}
		// The etcd compare decides; the pool may still hold an address
		// whose release event has not arrived yet.
		reserved := p.Reserve(ip, o.Spec.Host) == nil
		a.undo = func() {
			if reserved && !taken {
				p.Release(ip)
			}
		}
	} else {
		ip, err = p.Allocate(o.Spec.Host)
		if err != nil {
			return apiv1.NewStatus(http.StatusInsufficientStorage, apiv1.ReasonConflict, "subnet %s/%s has no free address: %v", t, o.Spec.Subnet, err)
		}
		a.undo = func() {
			if !taken {
				p.Release(ip)
			}
		}
	}
	ik := r.st.Key(ipamKey(t, o.Spec.Subnet, ip))
	a.txn.Compares = append(a.txn.Compares,
		r.exists(apiv1.KindSubnet, t, o.Spec.Subnet),
		r.exists(apiv1.KindHost, "", o.Spec.Host),
		clientv3.Compare(clientv3.CreateRevision(ik), "=", 0),
	)
	a.txn.Else = append(a.txn.Else, clientv3.OpGet(ik))
	a.txn.Ops = append(a.txn.Ops,
		clientv3.OpPut(ik, name),
		clientv3.OpPut(r.st.Key(hostRefKey(o.Spec.Host, t, name)), ""),
	)
	if o.Spec.QoSClass != "" {
		a.txn.Compares = append(a.txn.Compares, r.exists(apiv1.KindQoSClass, t, o.Spec.QoSClass))
		a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(r.st.Key(qosRefKey(t, o.Spec.QoSClass, name)), ""))
	}
	a.diagnose = func(res store.Result) error {
		var holder []byte
		if len(res.Else) > 1 {
			if kvs := rangeKVs(res.Else[1]); len(kvs) > 0 {
				taken, holder = true, kvs[0].Value // keep it marked used
			}
		}
		if alreadyExists(res) {
			return apiv1.NewAlreadyExists(apiv1.RefOf(o))
		}
		if taken && static {
			return apiv1.NewConflict("address %s of subnet %s/%s is already taken by endpoint %q", ip, t, o.Spec.Subnet, string(holder))
		}
		return nil // taken: try another address
	}
	vni, vpc := uint32(0), ""
	if sn, ok := r.st.Get(apiv1.KindSubnet, t, o.Spec.Subnet); ok {
		vni, vpc = sn.(*apiv1.Subnet).Status.VNI, sn.(*apiv1.Subnet).Spec.VPC
	}
	mac := o.Spec.MAC
	if mac == "" {
		mac = alloc.MAC(ip).String()
	}
	o.Status = apiv1.EndpointStatus{
		IP: ip.String(), MAC: mac, Host: o.Spec.Host, Netns: o.Spec.Netns, VNI: vni, Phase: apiv1.PhasePending,
	}
	apiv1.SetEndpointReady(o, r.cfg.Now())
	if err := r.planIdentity(ctx, a, o, vpc); err != nil {
		a.undo() // the address
		return err
	}
	return nil
}

// Update replaces an object's labels, annotations, owner references and
// spec. The status is kept (it is the controller's); a
// metadata.resourceVersion in obj must match. With apiv1.WithDryRun it
// returns the object as it would be stored, and stores nothing.
func (r *Registry) Update(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	dryRun := apiv1.NewWriteOptions(opts...).DryRun
	if _, err := kindOf(obj); err != nil {
		return nil, err
	}
	apiv1.Default(obj)
	ref := apiv1.RefOf(obj)
	objKey := r.st.ObjectKey(ref)
	wantRV := obj.GetObjectMeta().ResourceVersion
	if wantRV != "" {
		rv, err := strconv.ParseInt(wantRV, 10, 64)
		if err != nil || rv <= 0 {
			return nil, apiv1.NewInvalid(ref, []apiv1.FieldError{{Field: "metadata.resourceVersion", Message: "must be a positive integer"}})
		}
		// A client may have read a newer revision than this replica's cache.
		if err := r.st.WaitForRevision(ctx, rv); err != nil {
			return nil, storeError(err)
		}
	}
	var unchanged apiv1.Object
	reqVPC := vpcOf(obj)
	unlock, attempts, err := r.serialize(ctx, obj, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	a, rev, err := r.runN(ctx, attempts, freshnessOf(dryRun), func() (*attempt, error) {
		cacheRev := r.st.Revision()
		oldObj, ok := r.st.Get(ref.Kind, ref.Tenant, ref.Name)
		if !ok {
			return nil, apiv1.NewNotFound(ref)
		}
		r.defaultRefs(obj, oldObj, reqVPC)
		oldMeta := oldObj.GetObjectMeta()
		if wantRV != "" && wantRV != oldMeta.ResourceVersion {
			return nil, apiv1.NewConflict("%s has been modified (resourceVersion %s, yours %s): read it again and retry", ref, oldMeta.ResourceVersion, wantRV)
		}
		if err := apiv1.ValidateUpdate(obj, oldObj, r.st); err != nil {
			return nil, err
		}
		next, err := merge(oldObj, obj)
		if err != nil {
			return nil, err
		}
		if next == nil {
			unchanged = oldObj
			return nil, errUnchanged
		}
		oldRev, _ := strconv.ParseInt(oldMeta.ResourceVersion, 10, 64)
		a := &attempt{obj: next, dryRun: dryRun}
		a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.ModRevision(objKey), "=", oldRev))
		a.txn.Else = append(a.txn.Else, clientv3.OpGet(objKey, clientv3.WithKeysOnly()))
		a.diagnose = func(res store.Result) error {
			if len(res.Else) > 0 && rangeCount(res.Else[0]) == 0 {
				return apiv1.NewNotFound(ref)
			}
			if wantRV != "" {
				return apiv1.NewConflict("%s has been modified since resourceVersion %s: read it again and retry", ref, wantRV)
			}
			return nil
		}
		switch n := next.(type) {
		case *apiv1.Endpoint:
			if err := r.planEndpointUpdate(ctx, a, oldObj.(*apiv1.Endpoint), n, cacheRev); err != nil {
				return nil, err
			}
		case *apiv1.SecurityPolicy:
			r.planVPCUse(a, n, vpcOf(oldObj))
		case *apiv1.AppIntent:
			r.planVPCUse(a, n, vpcOf(oldObj))
			if err := r.admitWrite(a, oldObj, n, cacheRev); err != nil {
				return nil, err
			}
		case *apiv1.QoSClass, *apiv1.VPC, *apiv1.Host:
			if err := r.admitWrite(a, oldObj, n, cacheRev); err != nil {
				return nil, err
			}
			if h, ok := n.(*apiv1.Host); ok {
				// Alive and ViewApplied hold for the new generation too:
				// liveness does not depend on the spec, and the next Ack
				// or Nack of a view writes ViewApplied again.
				apiv1.SetHostConditions(h, r.cfg.Now())
			}
		}
		val, err := encode(next)
		if err != nil {
			return nil, err
		}
		a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(objKey, val))
		return a, nil
	})
	if errors.Is(err, errUnchanged) {
		return unchanged, nil
	}
	if err != nil {
		return nil, err
	}
	out := a.obj
	if dryRun {
		rev = max(rev, 0)
		if old, ok := r.st.Get(ref.Kind, ref.Tenant, ref.Name); ok {
			out.GetObjectMeta().ResourceVersion = old.GetObjectMeta().ResourceVersion
		}
		return out, nil
	}
	out.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
	return out, nil
}

var errUnchanged = errors.New("unchanged")

// merge builds the next stored object from the old one and the requested
// labels, annotations, owner references and spec; nil means nothing
// changes. Only a change of spec or labels is a new generation.
func merge(oldObj, req apiv1.Object) (apiv1.Object, error) {
	om, rm := oldObj.GetObjectMeta(), req.GetObjectMeta()
	oldSpec, reqSpec := specOf(oldObj), specOf(req)
	newGen := !reflect.DeepEqual(oldSpec.Interface(), reqSpec.Interface()) || !maps.Equal(om.Labels, rm.Labels)
	if !newGen && maps.Equal(om.Annotations, rm.Annotations) && slices.Equal(om.OwnerReferences, rm.OwnerReferences) {
		return nil, nil
	}
	next, err := clone(oldObj)
	if err != nil {
		return nil, err
	}
	specOf(next).Set(reqSpec)
	m := next.GetObjectMeta()
	m.Labels, m.Annotations, m.OwnerReferences = rm.Labels, rm.Annotations, rm.OwnerReferences
	if newGen {
		m.Generation++
	}
	m.ResourceVersion = ""
	return next, nil
}

// specOf returns the Spec field of an object.
func specOf(o apiv1.Object) reflect.Value {
	return reflect.ValueOf(o).Elem().FieldByName("Spec")
}

func (r *Registry) planEndpointUpdate(ctx context.Context, a *attempt, old, next *apiv1.Endpoint, cacheRev int64) error {
	t, name := next.Metadata.Tenant, next.Metadata.Name
	if (old.Spec.Host != next.Spec.Host || r.classOf(old, overrides{}) != r.classOf(next, overrides{})) && r.involvesMinimum(next) {
		field := "spec.host"
		switch {
		case old.Spec.Host != next.Spec.Host:
		case old.Spec.QoSClass != next.Spec.QoSClass:
			field = "spec.qosClass"
		default: // the labels now select it for an AppIntent's class
			field = "metadata.labels"
		}
		if err := r.admit(next.Spec.Host, overrides{ep: next}, apiv1.RefOf(next), field); err != nil {
			return err
		}
		r.planAdmission(a, cacheRev)
	}
	if old.Spec.Host != next.Spec.Host {
		// A migration: the endpoint now belongs to the new host.
		a.txn.Compares = append(a.txn.Compares, r.exists(apiv1.KindHost, "", next.Spec.Host))
		a.txn.Ops = append(a.txn.Ops,
			clientv3.OpDelete(r.st.Key(hostRefKey(old.Spec.Host, t, name))),
			clientv3.OpPut(r.st.Key(hostRefKey(next.Spec.Host, t, name)), ""),
		)
		next.Status.Host = next.Spec.Host
		next.Status.Phase = apiv1.PhasePending
		next.Status.Netns = next.Spec.Netns
	}
	if old.Spec.QoSClass != next.Spec.QoSClass {
		if old.Spec.QoSClass != "" {
			a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(qosRefKey(t, old.Spec.QoSClass, name))))
		}
		if next.Spec.QoSClass != "" {
			a.txn.Compares = append(a.txn.Compares, r.exists(apiv1.KindQoSClass, t, next.Spec.QoSClass))
			a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(r.st.Key(qosRefKey(t, next.Spec.QoSClass, name)), ""))
		}
	}
	if next.Spec.MAC != "" {
		next.Status.MAC = next.Spec.MAC
	}
	apiv1.SetEndpointReady(next, r.cfg.Now()) // a new generation is not programmed yet
	// Relabelled (or stored before identities): the identity of the new
	// label set.
	if old.Status.Identity == 0 || labelsHash(old.Metadata.Labels) != labelsHash(next.Metadata.Labels) {
		vpc, ok := r.vpcOfSubnet(t, next.Spec.Subnet)
		if !ok {
			return apiv1.NewConflict("subnet %s/%s of endpoint %s is gone; retry", t, next.Spec.Subnet, name)
		}
		if err := r.planIdentity(ctx, a, next, vpc); err != nil {
			return err
		}
		if old.Status.Identity != next.Status.Identity {
			r.planIdentityRelease(a, old)
		}
	}
	return nil
}

// Delete removes an object unless others still refer to it, and returns
// it as it was. With apiv1.WithDryRun it only checks that it could.
func (r *Registry) Delete(ctx context.Context, ref apiv1.Ref, opts ...apiv1.WriteOption) (apiv1.Object, error) {
	dryRun := apiv1.NewWriteOptions(opts...).DryRun
	ki, ok := apiv1.LookupKind(ref.Kind)
	if !ok {
		return nil, apiv1.NewBadRequest("unknown kind %q", ref.Kind)
	}
	ref.Kind = ki.Kind
	objKey := r.st.ObjectKey(ref)
	var deleted apiv1.Object
	_, _, err := r.run(ctx, dryRun, func() (*attempt, error) {
		old, ok := r.st.Get(ref.Kind, ref.Tenant, ref.Name)
		if !ok {
			return nil, apiv1.NewNotFound(ref)
		}
		deleted = old
		if deps := r.dependents(old); len(deps) > 0 {
			e := apiv1.NewConflict("%s is still in use by %d object(s); delete them first", ref, len(deps))
			if len(deps) > 100 {
				deps = append(deps[:100], fmt.Sprintf("... and %d more", len(deps)-100))
			}
			e.Dependents = deps
			return nil, e
		}
		a := &attempt{dryRun: dryRun}
		a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.CreateRevision(objKey), ">", 0))
		a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(objKey))
		a.txn.Else = append(a.txn.Else, clientv3.OpGet(objKey, clientv3.WithKeysOnly()))
		a.diagnose = func(res store.Result) error {
			if len(res.Else) > 0 && rangeCount(res.Else[0]) == 0 {
				return apiv1.NewNotFound(ref)
			}
			return nil // a dependent appeared: re-plan reports it
		}
		r.planDelete(a, old)
		return a, nil
	})
	if err != nil {
		return nil, err
	}
	return deleted, nil
}

// planDelete adds the compares that no dependent exists and the deletes of
// the object's bookkeeping records.
func (r *Registry) planDelete(a *attempt, old apiv1.Object) {
	m := old.GetObjectMeta()
	t, name := m.Tenant, m.Name
	switch o := old.(type) {
	case *apiv1.Tenant:
		for _, k := range apiv1.Kinds() {
			if k.Namespaced {
				a.txn.Compares = append(a.txn.Compares, r.noneUnder("v1/"+k.Plural+"/"+name+"/"))
			}
		}
		a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(quotaKey(name))))
	case *apiv1.Host:
		a.txn.Compares = append(a.txn.Compares, r.noneUnder(hostRefPrefix(name)))
		if o.Status.HostID != 0 {
			a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(hostIDKey(o.Status.HostID))))
		}
		if r.cfg.HostDeleteOps != nil {
			a.txn.Ops = append(a.txn.Ops, r.cfg.HostDeleteOps(o)...)
		}
	case *apiv1.QoSClass:
		a.txn.Compares = append(a.txn.Compares, r.noneUnder(qosRefPrefix(t, name)))
	case *apiv1.VPC:
		a.txn.Compares = append(a.txn.Compares, r.noneUnder(subnetRefPrefix(t, name)), r.noneUnder(vpcUsePrefix(t, name)))
		if o.Status.VNI != 0 {
			a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(vniKey(o.Status.VNI))))
		}
		// Without subnets it has no endpoints, so no identity in use.
		k := vpcKey{t, name}
		a.txn.Ops = append(a.txn.Ops,
			clientv3.OpDelete(r.st.Key(identityPrefix(k)), clientv3.WithPrefix()),
			clientv3.OpDelete(r.st.Key(identityIDPrefix(k)), clientv3.WithPrefix()))
	case *apiv1.Subnet:
		a.txn.Compares = append(a.txn.Compares, r.noneUnder(ipamPrefix(t, name)))
		a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(subnetRefKey(t, o.Spec.VPC, name))))
	case *apiv1.Endpoint:
		if ip, err := netip.ParseAddr(o.Status.IP); err == nil {
			a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(ipamKey(t, o.Spec.Subnet, ip))))
		}
		a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(hostRefKey(o.Spec.Host, t, name))))
		if o.Spec.QoSClass != "" {
			a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(qosRefKey(t, o.Spec.QoSClass, name))))
		}
		r.planIdentityRelease(a, o)
	case *apiv1.SecurityPolicy, *apiv1.AppIntent:
		ki, _ := apiv1.LookupKind(o.GetTypeMeta().Kind)
		a.txn.Ops = append(a.txn.Ops, clientv3.OpDelete(r.st.Key(vpcUseKey(t, vpcOf(o), ki.Plural, name))))
	}
}

// dependents lists the objects that block deleting o.
func (r *Registry) dependents(o apiv1.Object) []string {
	m := o.GetObjectMeta()
	var deps []apiv1.Object
	switch o.(type) {
	case *apiv1.Tenant:
		for _, k := range apiv1.Kinds() {
			if k.Namespaced {
				deps = append(deps, r.st.List(k.Kind, m.Name)...)
			}
		}
	case *apiv1.Host:
		deps = r.endpointsOnHost(m.Name)
	case *apiv1.QoSClass:
		for _, e := range r.st.List(apiv1.KindEndpoint, m.Tenant) {
			if e.(*apiv1.Endpoint).Spec.QoSClass == m.Name {
				deps = append(deps, e)
			}
		}
	case *apiv1.VPC:
		deps = r.subnetsOf(m.Tenant, m.Name)
		for _, kind := range []string{apiv1.KindSecurityPolicy, apiv1.KindAppIntent} {
			for _, p := range r.st.List(kind, m.Tenant) {
				if vpcOf(p) == m.Name {
					deps = append(deps, p)
				}
			}
		}
	case *apiv1.Subnet:
		deps = r.endpointsOf(m.Tenant, m.Name)
	}
	out := make([]string, len(deps))
	for i, d := range deps {
		out[i] = apiv1.RefOf(d).String()
	}
	sort.Strings(out)
	return out
}

// ---- helpers ----

func kindOf(obj apiv1.Object) (apiv1.KindInfo, error) {
	tm := obj.GetTypeMeta()
	ki, ok := apiv1.LookupKind(tm.Kind)
	if !ok || ki.Kind != tm.Kind {
		return apiv1.KindInfo{}, apiv1.NewBadRequest("unknown kind %q", tm.Kind)
	}
	return ki, nil
}

// clearStatus drops a client-sent status: status is the controller's.
func clearStatus(obj apiv1.Object) {
	st := reflect.ValueOf(obj).Elem().FieldByName("Status")
	if st.IsValid() {
		st.Set(reflect.Zero(st.Type()))
	}
}

// encode is the stored form: the object's JSON without resourceVersion
// (which is etcd's mod revision).
func encode(obj apiv1.Object) (string, error) {
	m := obj.GetObjectMeta()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	b, err := json.Marshal(obj)
	m.ResourceVersion = rv
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", apiv1.RefOf(obj), err)
	}
	return string(b), nil
}

// clone deep-copies an object (cached objects are shared and immutable).
func clone(o apiv1.Object) (apiv1.Object, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("clone %s: %w", apiv1.RefOf(o), err)
	}
	return apiv1.DecodeInto(b, o.GetTypeMeta().Kind)
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
