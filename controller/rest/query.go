package rest

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"sort"
	"strconv"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// listQuery is the query of a list or watch request.
type listQuery struct {
	sel    apiv1.LabelSelector
	fields apiv1.FieldSelector
	watch  bool
	rv     int64 // watch from this revision (0: list first)
	limit  int   // the most objects of a page
	cont   *continueToken
}

// continueToken says where the next page of a list starts: after the
// object (Tenant, Name), of the list begun at revision Rev.
type continueToken struct {
	Rev    int64  `json:"rev"`
	Tenant string `json:"tenant,omitempty"`
	Name   string `json:"name"`
}

// parseListQuery reads labelSelector, fieldSelector (of kind), watch,
// resourceVersion, limit and continue; limit defaults to, and is capped
// at, maxPage.
func parseListQuery(q url.Values, kind string, maxPage int) (listQuery, error) {
	lq := listQuery{limit: maxPage}
	var err error
	if lq.sel, err = apiv1.ParseSelector(q.Get("labelSelector")); err != nil {
		return lq, apiv1.NewBadRequest("labelSelector: %v", err)
	}
	if lq.fields, err = apiv1.ParseFieldSelector(kind, q.Get("fieldSelector")); err != nil {
		return lq, apiv1.NewBadRequest("fieldSelector: %v", err)
	}
	switch w := q.Get("watch"); w {
	case "true", "1":
		lq.watch = true
	case "", "false", "0":
	default:
		return lq, apiv1.NewBadRequest("watch %q: want true or false", w)
	}
	if v := q.Get("resourceVersion"); v != "" && v != "0" && lq.watch {
		if lq.rv, err = strconv.ParseInt(v, 10, 64); err != nil || lq.rv < 0 {
			return lq, apiv1.NewBadRequest("resourceVersion %q: want a non-negative integer", v)
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return lq, apiv1.NewBadRequest("limit %q: want a positive integer", v)
		}
		lq.limit = min(n, maxPage)
	}
	if v := q.Get("continue"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		var c continueToken
		if err == nil {
			err = json.Unmarshal(b, &c)
		}
		if err != nil || c.Rev <= 0 || c.Name == "" {
			return lq, apiv1.NewBadRequest("continue: not a token from this API's last page")
		}
		lq.cont = &c
	}
	return lq, nil
}

// page returns the page of items (sorted by tenant and name, as the store
// lists them, read at rev) that lq asks for among those keep admits, and
// the continue token of the next page ("" if this is the last).
func (lq listQuery) page(items []apiv1.Object, rev int64, keep func(apiv1.Object) bool) ([]apiv1.Object, string) {
	start := 0
	if c := lq.cont; c != nil {
		rev = c.Rev
		start = sort.Search(len(items), func(i int) bool {
			m := items[i].GetObjectMeta()
			return m.Tenant > c.Tenant || m.Tenant == c.Tenant && m.Name > c.Name
		})
	}
	var out []apiv1.Object
	for i := start; i < len(items); i++ {
		if !keep(items[i]) {
			continue
		}
		if len(out) == lq.limit {
			m := out[len(out)-1].GetObjectMeta()
			b, _ := json.Marshal(continueToken{Rev: rev, Tenant: m.Tenant, Name: m.Name})
			return out, base64.RawURLEncoding.EncodeToString(b)
		}
		out = append(out, items[i])
	}
	return out, ""
}
