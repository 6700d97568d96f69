package intent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/controller/store"
	"github.com/weftnet/weft/internal/lifecycle"
)

// Writer is the write path of the objects an intent owns and of the
// intents' status: the registry, so that they pass its validation,
// admission and compare-guarded transactions like any user's write.
type Writer interface {
	Create(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error)
	Update(ctx context.Context, obj apiv1.Object, opts ...apiv1.WriteOption) (apiv1.Object, error)
	Delete(ctx context.Context, ref apiv1.Ref, opts ...apiv1.WriteOption) (apiv1.Object, error)
	PatchStatus(ctx context.Context, ref apiv1.Ref, patch func(next apiv1.Object) bool) (apiv1.Object, error)
}

// Config configures a Controller.
type Config struct {
	// Store is the replica's started store: the controller follows it and
	// reads its cache.
	Store *store.Store
	// Writer writes the owned objects and the status (the registry).
	Writer Writer
	// Logger (default: discard).
	Logger *slog.Logger
	// RetryMin and RetryMax bound the delay before an intent whose
	// reconcile failed (a lost race, a refused write) is reconciled again;
	// the delay doubles with each failure in a row (default 100ms, 1m).
	RetryMin, RetryMax time.Duration
	// WriteTimeout bounds one reconcile's writes (default 30s).
	WriteTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RetryMin == 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = time.Minute
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
}

// Validate reports a missing or inconsistent setting.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("intent: Store is required")
	case c.Writer == nil:
		return errors.New("intent: Writer is required")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("intent: retry delays %v..%v: want 0 < min <= max", c.RetryMin, c.RetryMax)
	}
	return nil
}

// key names an AppIntent: the unit of work.
type key struct{ tenant, name string }

// Controller keeps every AppIntent's owned objects and status in step.
type Controller struct {
	cfg  Config
	st   *store.Store
	w    Writer
	log  *slog.Logger
	life lifecycle.Group
	wake chan struct{} // a token when work may be waiting

	mu    sync.Mutex
	dirty map[key]struct{} // to reconcile now
	retry map[key]*retry   // failed intents
	owned map[key]refSet   // intent name → objects naming it as owner
	rev   int64            // the last revision followed
	busy  bool             // a reconcile is running
}

type refSet map[apiv1.Ref]struct{}

// retry is the backoff of an intent whose reconciles keep failing.
type retry struct {
	failures int
	at       time.Time // when to reconcile again; zero while dirty or running
}

// New checks the configuration; Start runs the controller.
func New(cfg Config) (*Controller, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Controller{
		cfg: cfg, st: cfg.Store, w: cfg.Writer, log: cfg.Logger.With("subsystem", "intent"),
		wake:  make(chan struct{}, 1),
		dirty: map[key]struct{}{}, retry: map[key]*retry{}, owned: map[key]refSet{},
	}, nil
}

// Start follows the store from its current state (every intent and every
// owned object is reconciled first: a delete missed while no replica ran
// is caught up) and reconciles until Close.
func (c *Controller) Start(context.Context) error {
	if _, err := c.life.Start(); err != nil {
		return fmt.Errorf("intent: %w", err)
	}
	c.life.Go(func(ctx context.Context) {
		_ = store.Follow(ctx, c.st, store.FollowConfig{Name: "intent", OnEvents: c.observe, OnReset: c.reset, Logger: c.log})
	})
	c.life.Go(c.run)
	return nil
}

// Close stops following and reconciling and waits. It is idempotent.
func (c *Controller) Close() error { return c.life.Close() }

// ---- following the store ----

// observe marks the intents a batch of events may concern: an intent's
// own changes, changes of objects it owns or whose name it owns, and
// changes of which endpoints of its tenant exist and what they are
// labelled (not their status).
func (c *Controller) observe(evs []store.Event) {
	tenants := map[string]struct{}{}
	c.mu.Lock()
	for _, ev := range evs {
		t := ev.Object.GetObjectMeta().Tenant
		switch o := ev.Object.(type) {
		case *apiv1.AppIntent:
			c.dirty[key{t, o.Metadata.Name}] = struct{}{}
		case *apiv1.SecurityPolicy, *apiv1.QoSClass:
			if ev.Old != nil {
				c.index(ev.Old, false)
			}
			c.index(o, ev.Type != store.EventDeleted)
		case *apiv1.Endpoint:
			if old, ok := ev.Old.(*apiv1.Endpoint); !ok || ev.Type != store.EventModified || !sameSelection(old, o) {
				tenants[t] = struct{}{}
			}
		}
	}
	c.mu.Unlock()
	for t := range tenants {
		c.markAll(c.st.List(apiv1.KindAppIntent, t))
	}
	c.followed(evs[len(evs)-1].Revision)
}

// sameSelection reports whether two states of an endpoint are selected,
// and use a class, alike.
func sameSelection(a, b *apiv1.Endpoint) bool {
	return a.Spec.Subnet == b.Spec.Subnet && a.Spec.QoSClass == b.Spec.QoSClass && maps.Equal(a.Metadata.Labels, b.Metadata.Labels)
}

// index adds (or removes) an object that may be owned to the owner index
// and marks the intents concerned: those it names as owners and the one
// whose generated name it has. c.mu is held.
func (c *Controller) index(o apiv1.Object, add bool) {
	m, ref := o.GetObjectMeta(), apiv1.RefOf(o)
	for _, r := range m.OwnerReferences {
		if r.Kind != apiv1.KindAppIntent {
			continue
		}
		k := key{m.Tenant, r.Name}
		c.dirty[k] = struct{}{}
		switch {
		case !add:
			if delete(c.owned[k], ref); len(c.owned[k]) == 0 {
				delete(c.owned, k)
			}
		case c.owned[k] == nil:
			c.owned[k] = refSet{ref: {}}
		default:
			c.owned[k][ref] = struct{}{}
		}
	}
	if name, ok := strings.CutPrefix(m.Name, Prefix); ok && name != "" {
		c.dirty[key{m.Tenant, name}] = struct{}{}
	}
}

// reset rebuilds the owner index from the store and marks every intent
// and every owner named: the events since the last one observed are gone
// (at Start, or after a compacted gap).
func (c *Controller) reset(_ []apiv1.Object, rev int64) {
	c.mu.Lock()
	c.owned = map[key]refSet{}
	for _, kind := range []string{apiv1.KindSecurityPolicy, apiv1.KindQoSClass} {
		for _, o := range c.st.List(kind, "") {
			c.index(o, true)
		}
	}
	c.mu.Unlock()
	c.markAll(c.st.List(apiv1.KindAppIntent, ""))
	c.followed(rev)
}

// followed records that the events up to rev are marked, and wakes the
// work loop.
func (c *Controller) followed(rev int64) {
	c.mu.Lock()
	c.rev = rev
	c.mu.Unlock()
	c.signal()
}

// markAll marks intents to reconcile.
func (c *Controller) markAll(intents []apiv1.Object) {
	if len(intents) == 0 {
		return
	}
	c.mu.Lock()
	for _, o := range intents {
		m := o.GetObjectMeta()
		c.dirty[key{m.Tenant, m.Name}] = struct{}{}
	}
	c.mu.Unlock()
}

func (c *Controller) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// ---- the work loop ----

// run reconciles the marked intents, one at a time, until ctx ends; an
// intent whose reconcile failed is tried again after its backoff, or at
// once when an event marks it.
func (c *Controller) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		k, ok, wait := c.next(time.Now())
		if !ok {
			timer.Reset(wait) // since Go 1.23 no stale tick survives a Reset
			select {
			case <-c.wake:
			case <-timer.C:
			case <-ctx.Done():
				return
			}
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
		err := c.reconcile(wctx, k)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.finish(k, err, time.Now())
	}
}

// next takes an intent to reconcile: a marked one, or one whose retry is
// due. Without one it returns how long to wait for the next retry.
func (c *Controller) next(now time.Time) (key, bool, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wait := time.Hour
	for k, r := range c.retry {
		switch {
		case r.at.IsZero():
		case !now.Before(r.at):
			c.dirty[k] = struct{}{}
		default:
			wait = min(wait, r.at.Sub(now))
		}
	}
	for k := range c.dirty {
		delete(c.dirty, k)
		if r := c.retry[k]; r != nil {
			r.at = time.Time{}
		}
		c.busy = true
		return k, true, 0
	}
	return key{}, false, wait
}

// finish records the outcome of a reconcile: a failure schedules a retry
// after a delay that doubles with each failure in a row.
func (c *Controller) finish(k key, err error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy = false
	if err == nil {
		delete(c.retry, k)
		return
	}
	r := c.retry[k]
	if r == nil {
		r = &retry{}
		c.retry[k] = r
	}
	d := c.cfg.RetryMax
	if r.failures < 30 {
		d = min(c.cfg.RetryMin<<r.failures, c.cfg.RetryMax)
	}
	r.failures++
	if _, marked := c.dirty[k]; !marked {
		r.at = now.Add(d)
	}
	level := slog.LevelWarn
	switch {
	case errors.Is(err, errRefused):
		level = slog.LevelInfo // reported in the status
	case apiv1.IsConflict(err), apiv1.IsAlreadyExists(err), apiv1.IsNotFound(err):
		level = slog.LevelDebug // a race with a user or another replica
	}
	c.log.Log(context.Background(), level, "reconcile failed, retrying", "tenant", k.tenant, "intent", k.name, "in", d, "err", err)
}

// ---- reconciling one intent ----

// errRefused marks a write the registry refused (invalid, forbidden,
// over quota or capacity): the need is unmet until something changes.
var errRefused = errors.New("intent: write refused")

// reconcile brings the objects of intent k in step with it and writes its
// status; with the intent gone it deletes the objects it owned. Every
// write is compare-guarded, so replicas may reconcile the same intent at
// once: the loser of a race fails and reconciles again, finding the
// winner's write. It returns an error when a write failed.
func (c *Controller) reconcile(ctx context.Context, k key) error {
	var in *apiv1.AppIntent
	if o, ok := c.st.Get(apiv1.KindAppIntent, k.tenant, k.name); ok {
		in = o.(*apiv1.AppIntent)
	}
	var errs []error
	var unmet []string
	var objects []apiv1.LocalObjectReference
	desired := map[apiv1.Ref]bool{}
	if in != nil {
		for _, d := range Compile(in) {
			desired[apiv1.RefOf(d)] = true
			ours, msg, err := c.apply(ctx, in, d)
			if ours {
				objects = append(objects, apiv1.LocalObjectReference{Kind: d.GetTypeMeta().Kind, Name: d.GetObjectMeta().Name})
			}
			if msg != "" {
				unmet = append(unmet, needsOf(in, d)+": "+msg)
			}
			errs = append(errs, err)
		}
	}
	for _, ref := range c.ownedBy(k) {
		if desired[ref] {
			continue
		}
		msg, err := c.collect(ctx, ref, in)
		if msg != "" && in != nil {
			unmet = append(unmet, msg)
		}
		errs = append(errs, err)
	}
	if in != nil {
		unmet = append(unmet, c.selectionUnmet(in)...)
		errs = append(errs, c.writeStatus(ctx, in, apiv1.AppIntentStatus{
			ObservedGeneration: in.Metadata.Generation, Objects: objects, Unmet: unmet,
		}))
	}
	return errors.Join(errs...)
}

// apply writes one desired object unless it is already in step. ours says
// whether the object exists as the intent's after it (possibly with an
// older spec); msg, if any, says why the need is unmet.
func (c *Controller) apply(ctx context.Context, in *apiv1.AppIntent, d apiv1.Object) (ours bool, msg string, err error) {
	ref := apiv1.RefOf(d)
	cur, ok := c.st.Get(ref.Kind, ref.Tenant, ref.Name)
	switch {
	case !ok:
		_, err = c.w.Create(ctx, d)
		if err == nil {
			return true, "", nil
		}
	case !claimable(cur, in):
		return false, fmt.Sprintf("%s %s is taken: it belongs to %s", ref.Kind, ref.Name, ownersOf(cur)), nil
	case inStep(cur, d):
		return true, "", nil
	default:
		// The user's labels and annotations stay; the write is guarded by
		// the resourceVersion read.
		cm, dm := cur.GetObjectMeta(), d.GetObjectMeta()
		dm.Labels, dm.Annotations, dm.ResourceVersion = cm.Labels, cm.Annotations, cm.ResourceVersion
		_, err = c.w.Update(ctx, d)
		if err == nil {
			return true, "", nil
		}
	}
	if refused(err) {
		return ok, fmt.Sprintf("%s %s: %v", ref.Kind, ref.Name, err), fmt.Errorf("write %s: %w: %w", ref, errRefused, err)
	}
	return ok, "", fmt.Errorf("write %s: %w", ref, err)
}

// claimable reports whether the intent may take over an object of its
// generated name: one that names no owner (created by hand, or edited by
// hand without its owner reference) or only the intent's name (also an
// earlier intent of that name: its owned objects pass to the new one).
// Objects owned by anything else are left alone.
func claimable(o apiv1.Object, in *apiv1.AppIntent) bool {
	for _, r := range o.GetObjectMeta().OwnerReferences {
		if r.Kind != apiv1.KindAppIntent || r.Name != in.Metadata.Name {
			return false
		}
	}
	return true
}

// ownersOf names the owners of an object for a message.
func ownersOf(o apiv1.Object) string {
	var names []string
	for _, r := range o.GetObjectMeta().OwnerReferences {
		names = append(names, r.Kind+" "+r.Name)
	}
	return strings.Join(names, ", ")
}

// refused reports whether the registry refused a write for what it is,
// not for a race: retrying it unchanged fails until something changes.
func refused(err error) bool {
	var se *apiv1.StatusError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusUnprocessableEntity, http.StatusInsufficientStorage:
		return true
	}
	return len(se.Dependents) > 0
}

// needsOf names the needs of an intent that an owned object serves, for
// the status.
func needsOf(in *apiv1.AppIntent, o apiv1.Object) string {
	var f []string
	switch o.(type) {
	case *apiv1.SecurityPolicy:
		if len(in.Spec.TalksTo) > 0 {
			f = append(f, "talksTo")
		}
		if len(in.Spec.Exposes) > 0 {
			f = append(f, "exposes")
		}
	case *apiv1.QoSClass:
		if b := in.Spec.Bandwidth; b != nil && (b.Min != "" || b.Max != "") {
			f = append(f, "bandwidth")
		}
		if in.Spec.Latency == apiv1.LatencyLow {
			f = append(f, "latency")
		}
	}
	return strings.Join(f, ", ")
}

// formerNeeds names the needs an owned object of a kind served, for the
// status of an intent that no longer has them.
func formerNeeds(kind string) string {
	if kind == apiv1.KindQoSClass {
		return "bandwidth, latency"
	}
	return "talksTo, exposes"
}

// ownedBy lists the objects that name intent k as an owner, by kind and
// name.
func (c *Controller) ownedBy(k key) []apiv1.Ref {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Sorted: the status lists what it finds in this order.
	return slices.SortedFunc(maps.Keys(c.owned[k]), func(a, b apiv1.Ref) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name))
	})
}

// collect deletes an object owned by an intent that does not want it
// (in, possibly nil: deleted) unless another owner still lives. msg says
// why a wanted delete could not happen.
func (c *Controller) collect(ctx context.Context, ref apiv1.Ref, in *apiv1.AppIntent) (msg string, err error) {
	o, ok := c.st.Get(ref.Kind, ref.Tenant, ref.Name)
	if !ok {
		return "", nil
	}
	for _, r := range o.GetObjectMeta().OwnerReferences {
		switch owner, ok := c.st.Get(apiv1.KindAppIntent, ref.Tenant, r.Name); {
		case r.Kind != apiv1.KindAppIntent:
			return "", nil // another kind's object: not this controller's to judge
		case in != nil && r.Name == in.Metadata.Name:
			// The intent being reconciled does not want it.
		case ok && owner.GetObjectMeta().UID == r.UID:
			return "", nil // another live intent owns it too
		}
	}
	_, err = c.w.Delete(ctx, ref)
	switch {
	case err == nil || apiv1.IsNotFound(err):
		return "", nil
	case refused(err):
		// A QoSClass that endpoints still name in spec.qosClass.
		return fmt.Sprintf("%s: %s %s is no longer needed but cannot be deleted: %v", formerNeeds(ref.Kind), ref.Kind, ref.Name, err),
			fmt.Errorf("delete %s: %w: %w", ref, errRefused, err)
	}
	return "", fmt.Errorf("delete %s: %w", ref, err)
}

// maxNames bounds the endpoint names one status message lists.
const maxNames = 5

// selectionUnmet reports the needs the intent's endpoints defeat: it
// selects none, or some of them take another class than the intent's.
func (c *Controller) selectionUnmet(in *apiv1.AppIntent) []string {
	t := in.Metadata.Tenant
	var selected, own, other []string
	var others []string // the intents whose class the endpoints in other take
	subnets := map[string]bool{}
	for _, sn := range c.st.SubnetsByVPC(t, in.Spec.VPC) {
		subnets[sn.Metadata.Name] = true
	}
	eps, _ := c.st.ListSelector(apiv1.KindEndpoint, t, in.Spec.Selector.Matches)
	for _, o := range eps {
		ep := o.(*apiv1.Endpoint)
		if !subnets[ep.Spec.Subnet] {
			continue
		}
		selected = append(selected, ep.Metadata.Name)
		if !WantsClass(in) {
			continue
		}
		switch q := ClassOf(c.st, ep); {
		case q == Name(in.Metadata.Name):
		case ep.Spec.QoSClass != "":
			own = append(own, ep.Metadata.Name)
		default:
			other = append(other, ep.Metadata.Name)
			if n := strings.TrimPrefix(q, Prefix); !slices.Contains(others, n) {
				others = append(others, n)
			}
		}
	}
	if len(selected) == 0 {
		return []string{fmt.Sprintf("selector: selects no endpoint of VPC %s", in.Spec.VPC)}
	}
	var out []string
	needs := needsOf(in, &apiv1.QoSClass{})
	if len(own) > 0 {
		out = append(out, fmt.Sprintf("%s: the intent's class does not apply to endpoints with their own qosClass: %s", needs, names(own)))
	}
	if len(other) > 0 {
		out = append(out, fmt.Sprintf("%s: the class of AppIntent %s (the first by name that selects them) applies instead to: %s",
			needs, strings.Join(others, ", "), names(other)))
	}
	return out
}

// names lists names for a message, at most maxNames of them.
func names(s []string) string {
	if len(s) > maxNames {
		return fmt.Sprintf("%s and %d more", strings.Join(s[:maxNames], ", "), len(s)-maxNames)
	}
	return strings.Join(s, ", ")
}

// writeStatus writes an intent's status unless it is already so. The
// patch applies only to the intent it was computed from (same UID and
// generation): a newer one gets its own reconcile.
func (c *Controller) writeStatus(ctx context.Context, in *apiv1.AppIntent, status apiv1.AppIntentStatus) error {
	_, err := c.w.PatchStatus(ctx, apiv1.RefOf(in), func(next apiv1.Object) bool {
		n := next.(*apiv1.AppIntent)
		if n.Metadata.UID != in.Metadata.UID || n.Metadata.Generation != in.Metadata.Generation ||
			reflect.DeepEqual(n.Status, status) {
			return false
		}
		n.Status = status
		return true
	})
	if err != nil && !apiv1.IsNotFound(err) {
		return fmt.Errorf("write the status of %s: %w", apiv1.RefOf(in), err)
	}
	return nil
}
