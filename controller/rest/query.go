package rest

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
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

// page returns the first page of a list: of items (sorted by tenant and
// name, as the store lists them, read at rev) those keep admits, at most
// lq.limit, and the continue token of the next page ("" if this is the
// last). Next pages are read by Backend.ListPage.
func (lq listQuery) page(items []apiv1.Object, rev int64, keep func(apiv1.Object) bool) ([]apiv1.Object, string) {
	var out []apiv1.Object
	for _, o := range items {
		if !keep(o) {
			continue
		}
		if len(out) == lq.limit {
			return out, lq.token(rev, out[len(out)-1])
		}
		out = append(out, o)
	}
	return out, ""
}

// token is the continue token of the page after last, of a list at rev.
func (lq listQuery) token(rev int64, last apiv1.Object) string {
	m := last.GetObjectMeta()
	b, _ := json.Marshal(continueToken{Rev: rev, Tenant: m.Tenant, Name: m.Name})
	return base64.RawURLEncoding.EncodeToString(b)
}
