package registry

import (
	"net/http"

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
// also compares that the Tenant is unchanged since that revision, so that
// a quota set or lowered meanwhile is not missed.

// quotaKey is bumped by every counted create of a tenant with a quota.
func quotaKey(tenant string) string { return "quota/" + tenant }

// quotaOf returns the cap of the tenant's quota on obj's kind (0: none)
// and the quota's field, for a counted kind.
func (r *Registry) quotaOf(obj apiv1.Object) (limit int, field string, counted bool) {
	var get func(*apiv1.TenantQuota) int
	switch obj.(type) {
	case *apiv1.Endpoint:
		get, field = func(q *apiv1.TenantQuota) int { return q.Endpoints }, "endpoints"
	case *apiv1.VPC:
		get, field = func(q *apiv1.TenantQuota) int { return q.VPCs }, "vpcs"
	case *apiv1.SecurityPolicy:
		get, field = func(q *apiv1.TenantQuota) int { return q.Policies }, "policies"
	default:
		return 0, "", false
	}
	if t, ok := r.st.Get(apiv1.KindTenant, "", obj.GetObjectMeta().Tenant); ok {
		if q := t.(*apiv1.Tenant).Spec.Quota; q != nil {
			limit = get(q)
		}
	}
	return limit, field, true
}

// planQuota refuses the create of obj if its tenant's quota is used up,
// and makes a's transaction conditional on the count and the quota it
// read at cacheRev.
func (r *Registry) planQuota(a *attempt, obj apiv1.Object, cacheRev int64) error {
	limit, field, counted := r.quotaOf(obj)
	if !counted {
		return nil
	}
	tenant := obj.GetObjectMeta().Tenant
	unchanged := func(key string) clientv3.Cmp {
		return clientv3.Compare(clientv3.ModRevision(key), "<", cacheRev+1)
	}
	a.txn.Compares = append(a.txn.Compares, unchanged(r.st.ObjectKey(apiv1.Ref{Kind: apiv1.KindTenant, Name: tenant})))
	if limit == 0 {
		return nil
	}
	ki, _ := apiv1.LookupKind(obj.GetTypeMeta().Kind)
	if n := r.st.Count(ki.Kind, tenant); n >= limit {
		return apiv1.NewStatus(http.StatusForbidden, apiv1.ReasonQuotaExceeded,
			"%s: tenant %s has %d %s, its quota (spec.quota.%s) is %d: delete some or raise the quota",
			apiv1.RefOf(obj), tenant, n, ki.Plural, field, limit)
	}
	a.txn.Compares = append(a.txn.Compares, unchanged(r.st.Key(quotaKey(tenant))))
	a.txn.Ops = append(a.txn.Ops, clientv3.OpPut(r.st.Key(quotaKey(tenant)), ""))
	return nil
}

// quotaLock returns the key of the lock that the counted creates of obj's
// tenant take turns on (see serialize), or "" if its quota does not cap
// obj's kind.
func (r *Registry) quotaLock(obj apiv1.Object, create bool) string {
	if limit, _, _ := r.quotaOf(obj); create && limit > 0 {
		return quotaKey(obj.GetObjectMeta().Tenant)
	}
	return ""
}
