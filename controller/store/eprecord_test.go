package store

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Values of the fields that records keep in binary when they can: each
// pool mixes the forms that encode in binary with near misses that must
// stay text.
var (
	uidPool = []string{
		"", "0f8fad5b-d9cb-469f-a165-70867728950e", "00000000-0000-0000-0000-000000000000",
		"ffffffff-ffff-ffff-ffff-ffffffffffff",
		"0F8FAD5B-D9CB-469F-A165-70867728950E", // upper case
		"0f8fad5b-d9cb-469f-a165-70867728950",  // short
		"0f8fad5bd9cb469fa16570867728950e",     // no dashes
		"0f8fad5b-d9cb-469f-a165_70867728950e", // a dash elsewhere
		"0f8fad5b-d9cb-469f-a165-70867728950g", // not hex
		"uid-1", "ünïcödé",
	}
	timePool = []string{
		"", "2025-06-01T12:00:00Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
		"1969-12-31T23:59:59Z", "2024-02-29T23:59:59Z",
		"2025-06-01T12:00:00.5Z",    // fraction
		"2025-06-01T12:00:00+02:00", // offset
		"2025-06-01t12:00:00z",      // lower case
		"2025-02-30T12:00:00Z",      // no such day
		"2025-06-01T24:00:00Z",      // no such hour
		"2025-06-01 12:00:00Z",      // space
		"2025-06-01T12:00:00.000000000Z", "yesterday",
	}
	ipPool = []string{
		"", "10.0.0.1", "0.0.0.0", "255.255.255.255", "192.0.2.33",
		"2001:db8::1", "::", "::1", "fe80::1", "::ffff:10.1.2.3", "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1",
		"2001:DB8::1",    // upper case
		"2001:db8:0::1",  // not the shortest form
		"010.0.0.1",      // leading zero
		"fe80::1%eth0",   // zone
		"::ffff:a01:203", // mapped, hex form
		"10.0.0.256", "10.0.0.1/24", "host.example",
	}
	macPool = []string{
		"", "0a:58:0a:01:02:03", "02:00:0a:00:00:05", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00",
		"0A:58:0A:01:02:03", // upper case
		"0a-58-0a-01-02-03", // dashes
		"0a:58:0a:01:02",    // short
		"0a:58:0a:01:02:03:04:05",
		"0a:58:0a:01:02:0g", "0a580a010203",
	}
	phasePool = []string{"", apiv1.PhasePending, apiv1.PhaseReady, apiv1.PhaseFailed, apiv1.PhaseLost, "ready", "Unknown"}
	// wordPool feeds every other string: names, hosts, label keys …
	wordPool = []string{
		"", "a", "web", "h1", "h2", "sn-a", "acme", "other", "/var/run/netns/x", "/proc/42/ns/net",
		"gold", "weft/v1", "Endpoint", "Host", "v1", "\x00", "😀 emoji", strings.Repeat("long ", 40),
	}
)

// fieldPools gives the values of a field by its path in Endpoint.
var fieldPools = map[string][]string{
	"TypeMeta.APIVersion":        {apiv1.APIVersion, apiv1.APIVersion, "", "weft/v2"},
	"TypeMeta.Kind":              {apiv1.KindEndpoint, apiv1.KindEndpoint, "", "endpoint", "Host"},
	"Metadata.UID":               uidPool,
	"Metadata.CreationTimestamp": timePool,
	"Metadata.ResourceVersion":   {"", "0", "7", "007", "-1", "abc", "9223372036854775807"},
	"Spec.IP":                    ipPool,
	"Status.IP":                  ipPool,
	"Spec.MAC":                   macPool,
	"Status.MAC":                 macPool,
	"Status.Phase":               phasePool,
	// Paths of slice elements' fields name the slice.
	"Status.Conditions.Type":               {apiv1.ConditionPolicyProgrammed, apiv1.ConditionQoSProgrammed, ""},
	"Status.Conditions.Status":             {apiv1.ConditionTrue, apiv1.ConditionFalse, apiv1.ConditionUnknown, ""},
	"Status.Conditions.Reason":             {"", "Programmed", "Unsupported"},
	"Status.Conditions.LastTransitionTime": timePool,
	"Metadata.OwnerReferences.Kind":        {apiv1.KindAppIntent, ""},
	"Metadata.OwnerReferences.UID":         uidPool,
}

// randomEndpoint returns an Endpoint with every field set, by reflection
// (a field added to the API is set too, so the round trip tests it), from
// the pools: each pool's values now and then, other values otherwise.
func randomEndpoint(rng *rand.Rand) *apiv1.Endpoint {
	ep := &apiv1.Endpoint{}
	var fill func(v reflect.Value, path string)
	pick := func(pool []string) string { return pool[rng.IntN(len(pool))] }
	anyString := func(path string) string {
		if pool, ok := fieldPools[path]; ok && rng.IntN(8) != 0 {
			return pick(pool)
		}
		switch rng.IntN(6) {
		case 0:
			return pick(wordPool)
		case 1:
			return pick(uidPool)
		case 2:
			return pick(timePool)
		case 3:
			return pick(ipPool)
		case 4:
			return pick(macPool)
		}
		var b strings.Builder
		for range rng.IntN(300) {
			b.WriteRune(rune(rng.IntN(0x2000)))
		}
		return b.String()
	}
	fill = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				f := v.Type().Field(i)
				p := f.Name
				if path != "" {
					p = path + "." + f.Name
				}
				fill(v.Field(i), p)
			}
		case reflect.String:
			v.SetString(anyString(path))
		case reflect.Int64, reflect.Int:
			v.SetInt([]int64{0, 1, 2, rng.Int64(), -rng.Int64()}[rng.IntN(5)])
		case reflect.Uint32:
			v.SetUint([]uint64{0, 1, 4096, uint64(rng.Uint32())}[rng.IntN(4)])
		case reflect.Map: // map[string]string: nil, empty or a few labels
			switch n := rng.IntN(5); n {
			case 0:
			case 1:
				v.Set(reflect.MakeMap(v.Type()))
			default:
				m := reflect.MakeMap(v.Type())
				for range n - 1 {
					m.SetMapIndex(reflect.ValueOf(pick(wordPool)+pick(wordPool)), reflect.ValueOf(pick(wordPool)))
				}
				v.Set(m)
			}
		case reflect.Slice: // nil, empty or a few elements
			n := rng.IntN(5)
			if n == 0 {
				return
			}
			sl := reflect.MakeSlice(v.Type(), n-1, n-1)
			for i := range n - 1 {
				fill(sl.Index(i), path)
			}
			v.Set(sl)
		default:
			panic(fmt.Sprintf("randomEndpoint: field %s of kind %s: teach the test (and epRecord) about it", path, v.Kind()))
		}
	}
	fill(reflect.ValueOf(ep).Elem(), "")
	return ep
}

// TestRecordRoundTrip builds records of many varied endpoints and checks
// that the endpoint built from each equals the original, field for field.
func TestRecordRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tbl := newEpTable()
	for i := range 20000 {
		ep := randomEndpoint(rng)
		modRev := []int64{1, 7, 1 << 40, rng.Int64()}[rng.IntN(4)]
		if rng.IntN(2) == 0 {
			ep.Metadata.ResourceVersion = strconv.FormatInt(modRev, 10)
		}
		r := tbl.newRecord(ep, modRev-1, modRev)
		if diff := cmp.Diff(ep, tbl.endpoint(r)); diff != "" {
			t.Fatalf("endpoint %d (modRev %d) (-want +got):\n%s", i, modRev, diff)
		}
		tbl.drop(r)
	}
	if n, m := tbl.strs.len(), tbl.labels.len(); n != 0 || m != 0 {
		t.Errorf("%d strings, %d label sets left interned", n, m)
	}
}

// TestRecordSize keeps records in the 96-byte size class: new fields go
// into data.
func TestRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(epRecord{}); n > 96 {
		t.Errorf("epRecord is %d bytes, want at most 96", n)
	}
}

// TestRecordEncodings checks that values in their canonical forms are kept
// in binary (the point of the records), and others as text.
func TestRecordEncodings(t *testing.T) {
	for _, tc := range []struct {
		field epField
		value string
		want  uint32
	}{
		{fAPIVersion, apiv1.APIVersion, encAbsent},
		{fAPIVersion, "", encText},
		{fKind, apiv1.KindEndpoint, encAbsent},
		{fUID, "", encAbsent},
		{fUID, "0f8fad5b-d9cb-469f-a165-70867728950e", encBinary},
		{fUID, "0F8FAD5B-D9CB-469F-A165-70867728950E", encText},
		{fResourceVersion, "42", encBinary},
		{fResourceVersion, "042", encText},
		{fCreated, "2025-06-01T12:00:00Z", encBinary},
		{fCreated, "2025-06-01T12:00:00.5Z", encText},
		{fStatusIP, "10.1.2.3", encBinary},
		{fStatusIP, "2001:db8::1", encBinary6},
		{fStatusIP, "::ffff:10.1.2.3", encBinary6},
		{fStatusIP, "2001:DB8::1", encText},
		{fSpecMAC, "0a:58:0a:01:02:03", encBinary},
		{fSpecMAC, "0A:58:0A:01:02:03", encText},
		{fPhase, apiv1.PhaseLost, encBinary},
		{fPhase, "lost", encText},
		{fMessage, "x", encText},
	} {
		t.Run(fmt.Sprintf("%d/%s", tc.field, tc.value), func(t *testing.T) {
			b, enc := appendField(nil, tc.field, tc.value, 42)
			if enc != tc.want {
				t.Errorf("encoding %d (%q), want %d", enc, b, tc.want)
			}
		})
	}
}

// TestCacheRoundTrip writes many varied endpoints through the cache as
// etcd would give them, creates, updates and deletes, and checks that
// every read (Get, List, the indexes, watch events with Old) gives back
// the decoded original.
func TestCacheRoundTrip(t *testing.T) {
	s := newTestCache(t)
	sub := &subscriber{backlog: 1 << 30, wake: make(chan struct{}, 1), dropped: s.metrics.dropped}
	s.cache.subs[sub] = struct{}{}
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 300
	names := func(i int) string { return "e" + strconv.Itoa(i) }
	tenants := []string{"acme", "other", "t3"}
	hosts := []string{"h1", "h2", "h3", ""}
	cur := map[tn]*apiv1.Endpoint{}
	rev := int64(1)
	var wantEvents []Event
	for step := range 3 * n {
		rev++
		i := rng.IntN(n)
		tenant := tenants[i%len(tenants)]
		key := tn{tenant, names(i)}
		old := cur[key]
		if old != nil && step%5 == 4 {
			delChange(t, s, apiv1.Ref{Kind: apiv1.KindEndpoint, Tenant: tenant, Name: key.name}, rev)
			delete(cur, key)
			wantEvents = append(wantEvents, Event{Type: EventDeleted, Object: old, Old: old, Revision: rev})
			continue
		}
		ep := randomEndpoint(rng)
		ep.TypeMeta = apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint}
		ep.Metadata.Name, ep.Metadata.Tenant = key.name, tenant
		ep.Spec.Host = hosts[rng.IntN(len(hosts))]
		ep.Spec.Subnet = []string{"a", "b"}[rng.IntN(2)]
		ep.Metadata.Labels = []map[string]string{nil, {}, {"app": "web"}, {"app": "db", "tier": "x"}}[rng.IntN(4)]
		want := decoded(t, s, ep, rev)
		chs := []change{{kind: s.cache.epKind, tenant: tenant, name: key.name, obj: decoded(t, s, ep, rev), createRev: rev, rev: rev}}
		if step%2 == 0 { // as listed: the events are built from the record
			s.cache.prepare(chs)
		}
		s.cache.apply(chs, rev)
		cur[key] = want
		ev := Event{Type: EventAdded, Object: want, Revision: rev}
		if old != nil {
			ev.Type, ev.Old = EventModified, old
		}
		wantEvents = append(wantEvents, ev)
	}

	// Every event, delivered as it happened and replayed from the ring.
	if diff := cmp.Diff(wantEvents, sub.queue); diff != "" {
		t.Errorf("watched events (-want +got):\n%s", diff)
	}
	s.cache.mu.Lock()
	replayed := s.cache.replay(0, &subscriber{})
	s.cache.mu.Unlock()
	if diff := cmp.Diff(wantEvents[len(wantEvents)-len(replayed):], replayed); diff != "" {
		t.Errorf("replayed events (-want +got):\n%s", diff)
	}

	// Every read.
	var all []apiv1.Object
	byHost := map[string][]*apiv1.Endpoint{}
	bySubnet := map[tn][]*apiv1.Endpoint{}
	byLabel := map[labelQuery][]*apiv1.Endpoint{}
	for _, tenant := range tenants {
		var list []apiv1.Object
		for i := range n {
			ep := cur[tn{tenant, names(i)}]
			if ep == nil {
				continue
			}
			got, ok := s.Get(apiv1.KindEndpoint, tenant, ep.Metadata.Name)
			if !ok {
				t.Fatalf("%s/%s not cached", tenant, ep.Metadata.Name)
			}
			if diff := cmp.Diff(ep, got); diff != "" {
				t.Fatalf("Get %s/%s (-want +got):\n%s", tenant, ep.Metadata.Name, diff)
			}
			list = append(list, ep)
			if ep.Spec.Host != "" {
				byHost[ep.Spec.Host] = append(byHost[ep.Spec.Host], ep)
			}
			bySubnet[tn{tenant, ep.Spec.Subnet}] = append(bySubnet[tn{tenant, ep.Spec.Subnet}], ep)
			for k, v := range ep.Metadata.Labels {
				q := labelQuery{tenant, k, v}
				byLabel[q] = append(byLabel[q], ep)
			}
		}
		sortObjects(list)
		all = append(all, list...)
		if diff := cmp.Diff(list, s.List(apiv1.KindEndpoint, tenant)); diff != "" {
			t.Errorf("List %s (-want +got):\n%s", tenant, diff)
		}
		if got := s.Count(apiv1.KindEndpoint, tenant); got != len(list) {
			t.Errorf("Count %s = %d, want %d", tenant, got, len(list))
		}
	}
	sortObjects(all)
	if diff := cmp.Diff(all, s.List(apiv1.KindEndpoint, "")); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if got := s.Count(apiv1.KindEndpoint, ""); got != len(all) {
		t.Errorf("Count = %d, want %d", got, len(all))
	}
	for h, want := range byHost {
		sortObjects(want)
		if diff := cmp.Diff(want, s.EndpointsByHost(h)); diff != "" {
			t.Errorf("EndpointsByHost %s (-want +got):\n%s", h, diff)
		}
	}
	for k, want := range bySubnet {
		sortObjects(want)
		if diff := cmp.Diff(want, s.EndpointsBySubnet(k.tenant, k.name)); diff != "" {
			t.Errorf("EndpointsBySubnet %v (-want +got):\n%s", k, diff)
		}
	}
	for q, want := range byLabel {
		sortObjects(want)
		if diff := cmp.Diff(want, s.EndpointsByLabel(q.tenant, q.key, q.value)); diff != "" {
			t.Errorf("EndpointsByLabel %v (-want +got):\n%s", q, diff)
		}
	}
	selected, _ := s.ListSelector(apiv1.KindEndpoint, "", func(l map[string]string) bool { return l != nil && len(l) == 0 })
	for _, o := range selected {
		if l := o.GetObjectMeta().Labels; l == nil || len(l) != 0 {
			t.Errorf("selected %s has labels %#v, want an empty map", apiv1.RefOf(o), l)
		}
	}
}

type labelQuery struct{ tenant, key, value string }

// decoded returns ep as the cache decodes it from etcd at rev.
func decoded(t *testing.T, s *Store, ep *apiv1.Endpoint, rev int64) *apiv1.Endpoint {
	t.Helper()
	o, err := decodeObject(s.kinds.mustLookup(apiv1.KindEndpoint), ep.Metadata.Tenant, ep.Metadata.Name, []byte(mustEncode(ep)), rev)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*apiv1.Endpoint)
}

// sortObjects sorts objects by tenant and name.
func sortObjects[V apiv1.Object](objs []V) {
	slices.SortFunc(objs, func(a, b V) int {
		ma, mb := a.GetObjectMeta(), b.GetObjectMeta()
		if c := strings.Compare(ma.Tenant, mb.Tenant); c != 0 {
			return c
		}
		return strings.Compare(ma.Name, mb.Name)
	})
}
