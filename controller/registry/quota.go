package registry

import (
	"net/http"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Tenant quotas. A create of an Endpoint, VPC or SecurityPolicy in a
// tenant whose spec.quota caps that kind is counted from the cache and
// refused with 403 QuotaExceeded when the tenant already has as many. As
// with admission, every counted create bumps its tenant's quotaKey with a
// compare that no other did since the cache revision it counted at, so
// that racing creates cannot together go over; deletes leave the key
// alone (they only make the count smaller). Every create of a counted kind
// also compares that the Tenant is the one whose quota it read (its
// ModRevision, a compare that also says it exists), so that a quota set or
// lowered meanwhile is not missed.

// quotaKey is bumped by every counted create of a tenant with a quota.
func quotaKey(tenant string) string { return "quota/" + tenant }

// quotaOf returns the cap of the tenant's quota on obj's kind (0: none)
// and the quota's field, for a counted kind, and the revision of the
// Tenant it read (0: not cached).
func (r *Registry) quotaOf(obj apiv1.Object) (limit int, field string, counted bool, tenantRev int64) {
	var get func(*apiv1.TenantQuota) int
	switch obj.(type) {
	case *apiv1.Endpoint:
		get, field = func(q *apiv1.TenantQuota) int { return q.Endpoints }, "endpoints"
	case *apiv1.VPC:
		get, field = func(q *apiv1.TenantQuota) int { return q.VPCs }, "vpcs"
	case *apiv1.SecurityPolicy:
		get, field = func(q *apiv1.TenantQuota) int { return q.Policies }, "policies"
	default:
		return 0, "", false, 0
	}
	if t, ok := r.st.Get(apiv1.KindTenant, "", obj.GetObjectMeta().Tenant); ok {
		if q := t.(*apiv1.Tenant).Spec.Quota; q != nil {
			limit = get(q)
		}
		tenantRev, _ = strconv.ParseInt(t.GetObjectMeta().ResourceVersion, 10, 64)
	}
	return limit, field, true, tenantRev
}

// planTenant makes a's transaction, the create of obj of a namespaced
// kind, conditional on its tenant: that it exists and, for a counted kind,
// that it is the Tenant whose quota was read (one compare of its
// ModRevision says both). It refuses the create if the tenant's quota is
// used up, and makes the transaction conditional on the count it read at
// cacheRev.
func (r *Registry) planTenant(a *attempt, obj apiv1.Object, cacheRev int64) error {
	tenant := obj.GetObjectMeta().Tenant
	tk := r.st.ObjectKey(apiv1.Ref{Kind: apiv1.KindTenant, Name: tenant})
	limit, field, counted, tenantRev := r.quotaOf(obj)
	switch {
	case !counted:
		a.txn.Compares = append(a.txn.Compares, r.exists(apiv1.KindTenant, "", tenant))
		return nil
	case tenantRev > 0:
		a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.ModRevision(tk), "=", tenantRev))
	default: // not cached (validation refuses that first): it must exist and be unchanged
		a.txn.Compares = append(a.txn.Compares, r.exists(apiv1.KindTenant, "", tenant),
			clientv3.Compare(clientv3.ModRevision(tk), "<", cacheRev+1))
	}
	if limit == 0 {
		return nil
	}
	ki, _ := apiv1.LookupKind(obj.GetTypeMeta().Kind)
	if n := r.st.Count(ki.Kind, tenant); n >= limit {
		return apiv1.NewStatus(http.StatusForbidden, apiv1.ReasonQuotaExceeded,
			"%s: tenant %s has %d %s, its quota (spec.quota.%s) is %d: delete some or raise the quota",
			apiv1.RefOf(obj), tenant, n, ki.Plural, field, limit)
	}
	qk := r.st.Key(quotaKey(tenant))
	a.txn.Compares = append(a.txn.Compares, clientv3.Compare(clientv3.ModRevision(qk), "<", cacheRev+1))
	a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(qk, ""))
	return nil
}

// quotaLock returns the key of the lock that the counted creates of obj's
// tenant take turns on (see serialize), or "" if its quota does not cap
// obj's kind.
func (r *Registry) quotaLock(obj apiv1.Object, create bool) string {
	if limit, _, _, _ := r.quotaOf(obj); create && limit > 0 {
		return quotaKey(obj.GetObjectMeta().Tenant)
	}
	return ""
}
