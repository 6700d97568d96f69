// Package intent is the AppIntent controller: it compiles each AppIntent
// into the SecurityPolicy and QoSClass that meet its needs, owned by the
// intent, and keeps them and the intent's status in step with it.
//
// # What an intent compiles to
//
// Compile is the mapping (Explain renders it need by need): the intent
// "shop" owns SecurityPolicy "appintent-shop" when it has talksTo or
// exposes (talksTo[i] → egress[i], exposes[i] → ingress[i], selector and
// VPC the intent's) and QoSClass "appintent-shop" when it asks for a
// bandwidth rate or low latency. Both carry metadata.ownerReferences
// naming the intent's kind, name and uid, and are written through the
// registry like any user's write: validated, admitted, quota-counted and
// committed in compare-guarded transactions.
//
// # Which endpoints use the intent's class
//
// The controller never rewrites endpoints (an endpoint's spec is its
// user's: rewriting it would fight every `weft apply`). Instead ClassOf is
// the one rule that the compiler, admission and this controller share: an
// endpoint that names a qosClass uses it; one that names none uses the
// class of the first AppIntent, by name, of its tenant and VPC that selects
// it and asks for QoS. The status reports the selected endpoints the
// intent's class does not reach (they name their own, or an earlier intent
// claims them).
//
// # Keeping in step
//
// The controller follows the store (store.Follow) and reconciles an intent
// whenever it changes, an object it owns or whose generated name it holds
// changes or disappears, or an endpoint of its tenant appears, disappears
// or is relabelled. A reconcile is level-based: it creates what is
// missing, updates (guarded by the resourceVersion read) what was edited
// by hand, deletes what the intent no longer asks for, and writes the
// status (observedGeneration, objects, unmet) with a status patch that
// applies only to the generation it was computed from. A deleted intent's
// objects are deleted (every AppIntent owner gone). Following starts with
// a full reconcile of every intent and every owner named in the store, so
// a delete missed while no replica ran is caught up at start, as after a
// compacted gap in the watch.
//
// An object of a generated name that names no owner, or only an earlier
// intent of the same name, is taken over: a hand edit that dropped the
// owner reference is restored, and a new intent inherits its
// predecessor's objects. One owned by anything else is left alone and
// reported as unmet ("is taken").
//
// # Replicas
//
// Every replica runs the controller on every intent: no election, no
// sharding. This is safe because every write is idempotent and
// compare-guarded (create if absent, update at the resourceVersion read,
// status patch at the generation read, delete of what the cache shows
// unowned at a revision that also shows the owner's delete) and because
// every replica computes the same objects from the same intent. Of two
// replicas racing, the loser's write fails, and its next reconcile finds
// the winner's write in step. A replica whose cache lags can at worst
// re-create an object just collected; the event of that write makes it
// (and every replica) collect it again.
//
// A write the registry refuses (422 invalid or over capacity, 403 over
// quota) becomes an unmet entry naming the need and the registry's
// message; the intent is reconciled again on its next event or after a
// backoff (Config.RetryMin doubling to RetryMax), since capacity may be
// freed elsewhere.
package intent
