package web

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// states are the host liveness states in the map's order: a host's cell
// is its state's index here.
var states = [...]string{apiv1.LivenessAlive, apiv1.LivenessSuspect, apiv1.LivenessDead, apiv1.LivenessUnknown}

func stateIndex(s string) int {
	for i, st := range states {
		if st == s {
			return i
		}
	}
	return len(states) - 1 // "" and anything unknown count as Unknown
}

// maxGroups bounds the groups of a prefix level cut at separators; a level
// that would have more is cut after one more character instead.
const maxGroups = 256

// separators end a name segment ("dc1-rack07-h12": "dc1-", "rack07-", …).
const separators = "-._/:"

// grouping sorts hosts into the map's groups: by liveness state, by the
// controller replica they are connected to, or by the next segment of
// their name after prefix.
type grouping struct {
	by     string // "state", "replica" or "prefix"
	prefix string // prefix mode: the hosts shown, extended to their longest common prefix
	chars  bool   // prefix mode: cut one character after prefix, not at a separator
}

// newGrouping reads by and prefix from q and fits them to hosts (sorted by
// name, as the store lists them).
func newGrouping(q url.Values, hosts []apiv1.Object) (grouping, error) {
	g := grouping{by: q.Get("by"), prefix: q.Get("prefix")}
	switch g.by {
	case "":
		g.by = "state"
	case "state", "replica":
	case "prefix":
		var first, last string
		for _, o := range hosts {
			if n := o.GetObjectMeta().Name; strings.HasPrefix(n, g.prefix) {
				if first == "" {
					first = n
				}
				last = n
			}
		}
		for len(g.prefix) < min(len(first), len(last)) && first[len(g.prefix)] == last[len(g.prefix)] {
			g.prefix = first[:len(g.prefix)+1]
		}
		seen := map[string]struct{}{}
		for _, o := range hosts {
			if h, ok := o.(*apiv1.Host); ok {
				if k, ok := g.key(h); ok {
					seen[k] = struct{}{}
				}
			}
			if len(seen) > maxGroups {
				g.chars = true
				break
			}
		}
	default:
		return g, apiv1.NewBadRequest("by=%q: want state, replica or prefix", g.by)
	}
	return g, nil
}

// key returns the group of a host, or false if the map leaves it out.
func (g grouping) key(h *apiv1.Host) (string, bool) {
	switch g.by {
	case "replica":
		if h.Status.Replica == "" {
			return "(none)", true
		}
		return h.Status.Replica, true
	case "prefix":
		n := h.Metadata.Name
		if !strings.HasPrefix(n, g.prefix) {
			return "", false
		}
		rest := n[len(g.prefix):]
		if rest == "" {
			return n, true
		}
		if i := strings.IndexAny(rest, separators); i >= 0 && !g.chars {
			return n[:len(g.prefix)+i+1], true
		}
		return n[:len(g.prefix)+1], true
	default:
		return states[stateIndex(h.Status.Liveness)], true
	}
}

// mapGroup is one group of the health map.
type mapGroup struct {
	Key string `json:"key"`
	// Leaf is a prefix group that is one host's whole name: nothing below it.
	Leaf   bool             `json:"leaf,omitempty"`
	Total  int              `json:"total"`
	Counts [len(states)]int `json:"counts"`
	// Cells is one byte per host, its state's index, in name order.
	Cells []byte `json:"cells"`
}

// hostMap is the body of GET /ui/view/hostmap.
type hostMap struct {
	Revision string              `json:"revision"`
	By       string              `json:"by"`
	Prefix   string              `json:"prefix,omitempty"`
	States   [len(states)]string `json:"states"`
	Total    int                 `json:"total"`
	Counts   [len(states)]int    `json:"counts"`
	Groups   []*mapGroup         `json:"groups"`
}

// probeSelector matches no object: the API's answer to a list of hosts
// with it says whether the session may list hosts, at little cost.
const probeSelector = "weft-ui-probe,!weft-ui-probe"

// hosts lists every host if the session may list hosts through the API;
// otherwise it relays the API's refusal and returns false.
func (h *Handler) hosts(w http.ResponseWriter, r *http.Request, ses *session) ([]apiv1.Object, int64, bool) {
	rec := &recorder{}
	h.cfg.API.ServeHTTP(rec, apiGet(r.Context(), r, ses, "/apis/weft/v1/hosts?limit=1&labelSelector="+url.QueryEscape(probeSelector)))
	if rec.code != http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.code)
		_, _ = w.Write(rec.body)
		return nil, 0, false
	}
	objs, rev := h.cfg.Hosts.List(r.Context(), apiv1.KindHost, "", apiv1.LabelSelector{})
	return objs, rev, true
}

// hostMap serves GET /ui/view/hostmap?by=state|replica|prefix[&prefix=P]:
// every host's state in a few bytes, grouped, so the browser draws 100,000
// hosts on one canvas without a DOM node each.
func (h *Handler) hostMap(w http.ResponseWriter, r *http.Request, ses *session) {
	objs, rev, ok := h.hosts(w, r, ses)
	if !ok {
		return
	}
	g, err := newGrouping(r.URL.Query(), objs)
	if err != nil {
		writeStatus(w, err.(*apiv1.StatusError))
		return
	}
	out := hostMap{Revision: strconv.FormatInt(rev, 10), By: g.by, Prefix: g.prefix, States: states, Groups: []*mapGroup{}}
	index := map[string]*mapGroup{}
	if g.by == "state" { // all four, in order, even when empty
		for _, s := range states {
			index[s] = &mapGroup{Key: s}
			out.Groups = append(out.Groups, index[s])
		}
	}
	for _, o := range objs {
		host, ok := o.(*apiv1.Host)
		if !ok {
			continue
		}
		k, ok := g.key(host)
		if !ok {
			continue
		}
		grp := index[k]
		if grp == nil {
			grp = &mapGroup{Key: k, Leaf: g.by == "prefix" && k == host.Metadata.Name}
			index[k] = grp
			out.Groups = append(out.Groups, grp)
		} else if grp.Leaf {
			grp.Leaf = false
		}
		s := stateIndex(host.Status.Liveness)
		grp.Cells = append(grp.Cells, byte(s))
		grp.Counts[s]++
		grp.Total++
		out.Counts[s]++
		out.Total++
	}
	if g.by == "replica" { // prefix groups come in name order already
		slices.SortFunc(out.Groups, func(a, b *mapGroup) int { return strings.Compare(a.Key, b.Key) })
	}
	writeJSON(w, http.StatusOK, out)
}

// hostRow is one host of a page.
type hostRow struct {
	Name         string `json:"name"`
	State        string `json:"state"`
	Replica      string `json:"replica,omitempty"`
	UnderlayIP   string `json:"underlayIP"`
	LastSeen     string `json:"lastSeen,omitempty"`
	AgentVersion string `json:"agentVersion,omitempty"`
	ViewVersion  uint64 `json:"viewVersion,omitempty"`
	LastError    string `json:"lastError,omitempty"`
}

// hostPage serves GET /ui/view/hosts?by&prefix&group&state&q&offset&limit:
// one page of the hosts of a map group (all hosts without group), in name
// order, filtered by state and by a part of the name.
func (h *Handler) hostPage(w http.ResponseWriter, r *http.Request, ses *session) {
	objs, _, ok := h.hosts(w, r, ses)
	if !ok {
		return
	}
	q := r.URL.Query()
	g, err := newGrouping(q, objs)
	if err != nil {
		writeStatus(w, err.(*apiv1.StatusError))
		return
	}
	offset, _ := strconv.Atoi(q.Get("offset"))
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	group, state, sub := q.Get("group"), q.Get("state"), q.Get("q")
	page := struct {
		Total  int       `json:"total"`
		Offset int       `json:"offset"`
		Items  []hostRow `json:"items"`
	}{Offset: max(offset, 0), Items: []hostRow{}}
	for _, o := range objs {
		host, ok := o.(*apiv1.Host)
		if !ok {
			continue
		}
		if k, in := g.key(host); !in || (group != "" && k != group) {
			continue
		}
		st := states[stateIndex(host.Status.Liveness)]
		if (state != "" && st != state) || (sub != "" && !strings.Contains(host.Metadata.Name, sub)) {
			continue
		}
		if page.Total >= page.Offset && len(page.Items) < limit {
			page.Items = append(page.Items, hostRow{Name: host.Metadata.Name, State: st, Replica: host.Status.Replica,
				UnderlayIP: host.Spec.UnderlayIP, LastSeen: host.Status.LastSeen, AgentVersion: host.Status.AgentVersion,
				ViewVersion: host.Status.ViewVersion, LastError: host.Status.LastError})
		}
		page.Total++
	}
	writeJSON(w, http.StatusOK, page)
}
