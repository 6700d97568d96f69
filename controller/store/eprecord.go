package store

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// epRecord is one state of a cached endpoint, in 96 bytes with two
// pointers plus about 32 bytes of data: the decoded *apiv1.Endpoint alone
// takes 352 bytes with twenty pointer fields, before its strings. The
// cache holds a million endpoints and more, and the GC marks what it holds
// on every cycle (see BenchmarkEndpointMemory and BenchmarkCacheMemory).
//
//   - The values many endpoints repeat (tenant, subnet, hosts, QoS class,
//     the label set) are IDs in the epTable's intern tables.
//   - The name is a string of its own, kept from version to version:
//     readers keep names (as map keys for instance), and a name must not
//     keep anything else alive.
//   - The other strings are encoded one after the other in data (see
//     epField): in binary where the string is in the one form the binary
//     gives back (a lower-case UUID, an RFC 3339 UTC time in seconds, an
//     IP or MAC address in canonical form, a resourceVersion that is the
//     ModRevision), as text otherwise, so that every value round-trips.
//   - The fields that are not strings come first in data: the security
//     identity as a uvarint, the conditions (which most endpoints carry:
//     interned type, status and reason, times in seconds) and, rarely
//     set, the annotations and owner references.
//
// A record is never modified once in the cache, except for refs, under the
// cache's lock: the cache and the events of the ring share it. Readers
// get an *apiv1.Endpoint built from it by epTable.endpoint.
type epRecord struct {
	name string
	data string
	// createRev and modRev are the key's CreateRevision and ModRevision.
	createRev, modRev int64
	generation        int64
	// refs counts the holders of the record (the cache, ring events, an
	// undelivered change); the last to go releases its intern IDs.
	refs int32
	// enc holds each field's encoding in data, 2 bits per epField.
	enc uint32
	// strTable IDs.
	tenant, subnet, host, qos, statusHost uint32
	labels                                uint32 // labelTable ID
	vni                                   uint32
	emptyLabels                           bool // Labels is an empty map rather than nil
}

// epField is a string field of an Endpoint kept in epRecord.data.
type epField uint8

// The fields in data, in order; each is present in data unless its
// encoding is encAbsent.
const (
	fAPIVersion      epField = iota // encAbsent: apiv1.APIVersion
	fKind                           // encAbsent: apiv1.KindEndpoint
	fUID                            // encBinary: a UUID in 16 bytes
	fResourceVersion                // encBinary: modRev in decimal, no bytes
	fCreated                        // encBinary: RFC 3339 UTC seconds, varint Unix time
	fSpecIP                         // encBinary: IPv4 in 4 bytes; encBinary6: IPv6 in 16
	fSpecMAC                        // encBinary: 6 bytes
	fSpecNetns                      //
	fStatusIP                       // as fSpecIP
	fStatusMAC                      // as fSpecMAC
	fStatusNetns                    //
	fPhase                          // encBinary: 1 byte, the index in epPhases
	fMessage                        //
	// The fields below are not strings; they come first in data.
	fIdentity   // encBinary: Status.Identity as a uvarint; encAbsent: 0
	fConditions // encBinary: see appendConditions; encAbsent: nil
	fMeta       // encBinary: annotations and owner references, see appendMeta; encAbsent: both nil
	numEpFields // 16: enc has no room for more
)

// numStrFields is the number of string fields, the first ones.
const numStrFields = fIdentity

// Encodings of an epField.
const (
	encAbsent  = 0 // "" (fAPIVersion and fKind: the constant)
	encText    = 1 // uvarint length, then the bytes
	encBinary  = 2 // the field's binary form
	encBinary6 = 3 // an IPv6 address
)

// epPhases are the phases kept as one byte.
var epPhases = [...]string{apiv1.PhasePending, apiv1.PhaseReady, apiv1.PhaseFailed, apiv1.PhaseLost}

// epFields returns pointers to ep's string fields kept in data, by epField.
func epFields(ep *apiv1.Endpoint) [numStrFields]*string {
	return [numStrFields]*string{
		fAPIVersion:      &ep.APIVersion,
		fKind:            &ep.Kind,
		fUID:             &ep.Metadata.UID,
		fResourceVersion: &ep.Metadata.ResourceVersion,
		fCreated:         &ep.Metadata.CreationTimestamp,
		fSpecIP:          &ep.Spec.IP,
		fSpecMAC:         &ep.Spec.MAC,
		fSpecNetns:       &ep.Spec.Netns,
		fStatusIP:        &ep.Status.IP,
		fStatusMAC:       &ep.Status.MAC,
		fStatusNetns:     &ep.Status.Netns,
		fPhase:           &ep.Status.Phase,
		fMessage:         &ep.Status.Message,
	}
}

// encoding returns the encoding of field f.
func (r *epRecord) encoding(f epField) uint32 { return r.enc >> (2 * f) & 3 }

// newRecord returns ep as a record held once (by the caller), taking
// references to the interned values it uses.
func (t *epTable) newRecord(ep *apiv1.Endpoint, createRev, modRev int64) *epRecord {
	m := &ep.Metadata
	r := &epRecord{
		name:        m.Name,
		createRev:   createRev,
		modRev:      modRev,
		generation:  m.Generation,
		refs:        1,
		tenant:      t.strs.acquire(m.Tenant),
		subnet:      t.strs.acquire(ep.Spec.Subnet),
		host:        t.strs.acquire(ep.Spec.Host),
		qos:         t.strs.acquire(ep.Spec.QoSClass),
		statusHost:  t.strs.acquire(ep.Status.Host),
		labels:      t.labels.acquire(m.Labels, &t.strs),
		vni:         ep.Status.VNI,
		emptyLabels: m.Labels != nil && len(m.Labels) == 0,
	}
	var buf [192]byte
	b := buf[:0]
	if id := ep.Status.Identity; id != 0 {
		b = binary.AppendUvarint(b, uint64(id))
		r.enc |= encBinary << (2 * fIdentity)
	}
	if c := ep.Status.Conditions; c != nil {
		b = t.appendConditions(b, c)
		r.enc |= encBinary << (2 * fConditions)
	}
	if m.Annotations != nil || m.OwnerReferences != nil {
		b = appendMeta(b, m)
		r.enc |= encBinary << (2 * fMeta)
	}
	for f, p := range epFields(ep) {
		var enc uint32
		b, enc = appendField(b, epField(f), *p, modRev)
		r.enc |= enc << (2 * f)
	}
	r.data = string(b)
	return r
}

// appendConditions appends conditions to b: their number, then for each
// the strTable IDs of type, status and reason (acquired), the message as
// text, observedGeneration as a varint and lastTransitionTime, either
// a 1 and a varint Unix time (RFC 3339 UTC seconds) or a 0 and text.
func (t *epTable) appendConditions(b []byte, conds []apiv1.Condition) []byte {
	b = binary.AppendUvarint(b, uint64(len(conds)))
	for _, c := range conds {
		for _, s := range [...]string{c.Type, c.Status, c.Reason} {
			b = binary.AppendUvarint(b, uint64(t.strs.acquire(s)))
		}
		b = appendText(b, c.Message)
		b = binary.AppendVarint(b, c.ObservedGeneration)
		if sec, ok := parseSeconds(c.LastTransitionTime); ok {
			b = binary.AppendVarint(append(b, 1), sec)
		} else {
			b = appendText(append(b, 0), c.LastTransitionTime)
		}
	}
	return b
}

// appendMeta appends the annotations (their number plus one, 0 for nil,
// then keys and values as text, by key) and the owner references (as
// many plus one, then kind, name and UID as text) to b.
func appendMeta(b []byte, m *apiv1.ObjectMeta) []byte {
	if m.Annotations == nil {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(m.Annotations))+1)
		for _, k := range slices.Sorted(maps.Keys(m.Annotations)) {
			b = appendText(appendText(b, k), m.Annotations[k])
		}
	}
	if m.OwnerReferences == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(m.OwnerReferences))+1)
	for _, o := range m.OwnerReferences {
		b = appendText(appendText(appendText(b, o.Kind), o.Name), o.UID)
	}
	return b
}

// releaseConditions releases the strTable IDs of r's conditions.
func (t *epTable) releaseConditions(r *epRecord) {
	if r.encoding(fConditions) == encAbsent {
		return
	}
	d := r.data
	if r.encoding(fIdentity) != encAbsent {
		_, k := uvarintString(d)
		d = d[k:]
	}
	n, k := uvarintString(d)
	d = d[k:]
	for range n {
		var c condRecord
		c, d = nextCondition(d)
		for _, id := range c.ids {
			t.strs.release(id)
		}
	}
}

// condRecord is a condition as data holds it (see appendConditions).
type condRecord struct {
	ids     [3]uint32 // type, status, reason
	message string
	gen     int64
	// time is lastTransitionTime as text, unless binTime: then sec.
	time    string
	sec     int64
	binTime bool
}

// nextCondition decodes the condition at the start of d and returns the
// rest of d.
func nextCondition(d string) (c condRecord, rest string) {
	for i := range c.ids {
		id, k := uvarintString(d)
		c.ids[i], d = uint32(id), d[k:]
	}
	c.message, d = textString(d)
	gen, k := varintString(d)
	c.gen, d = gen, d[k:]
	if c.binTime = d[0] == 1; c.binTime {
		c.sec, k = varintString(d[1:])
		return c, d[1+k:]
	}
	c.time, d = textString(d[1:])
	return c, d
}

// appendField appends field f of value s to b and returns its encoding.
func appendField(b []byte, f epField, s string, modRev int64) ([]byte, uint32) {
	switch f {
	case fAPIVersion:
		if s == apiv1.APIVersion {
			return b, encAbsent
		}
		return appendText(b, s), encText
	case fKind:
		if s == apiv1.KindEndpoint {
			return b, encAbsent
		}
		return appendText(b, s), encText
	}
	if s == "" {
		return b, encAbsent
	}
	switch f {
	case fUID:
		if u, ok := parseUUID(s); ok {
			return append(b, u[:]...), encBinary
		}
	case fResourceVersion:
		var num [20]byte
		if string(strconv.AppendInt(num[:0], modRev, 10)) == s {
			return b, encBinary
		}
	case fCreated:
		if sec, ok := parseSeconds(s); ok {
			return binary.AppendVarint(b, sec), encBinary
		}
	case fSpecIP, fStatusIP:
		if a, ok := parseCanonicalIP(s); ok {
			if a.Is4() {
				a4 := a.As4()
				return append(b, a4[:]...), encBinary
			}
			a16 := a.As16()
			return append(b, a16[:]...), encBinary6
		}
	case fSpecMAC, fStatusMAC:
		if mac, ok := parseMAC(s); ok {
			return append(b, mac[:]...), encBinary
		}
	case fPhase:
		for i, p := range epPhases {
			if s == p {
				return append(b, byte(i)), encBinary
			}
		}
	}
	return appendText(b, s), encText
}

func appendText(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// epNames resolves the interned IDs of records: the epTable's own tables,
// used with the cache's lock held, or a copy of them, used without.
type epNames struct {
	strs   []string   // by strTable ID
	labels []labelSet // by labelTable ID
}

// names returns the table's names, for use with the cache's lock held.
func (t *epTable) names() epNames { return epNames{strs: t.strs.strs, labels: t.labels.sets} }

// namesCopy returns a copy of the table's names: endpoints can be built
// with it once the cache's lock is released (records do not change).
func (t *epTable) namesCopy() epNames {
	return epNames{strs: slices.Clone(t.strs.strs), labels: slices.Clone(t.labels.sets)}
}

// endpoint returns a new Endpoint equal to the one r was built from. The
// cache's lock must be held.
func (t *epTable) endpoint(r *epRecord) *apiv1.Endpoint { return t.names().endpoint(r) }

// labelsOf returns the labels of r, as endpoint gives them.
func (n epNames) labelsOf(r *epRecord) map[string]string {
	switch {
	case r.labels != 0:
		return n.labels[r.labels].m
	case r.emptyLabels:
		return map[string]string{}
	}
	return nil
}

// endpoint returns a new Endpoint equal to the one r was built from. Its
// labels map is shared by every endpoint with the same labels and must not
// be modified.
func (n epNames) endpoint(r *epRecord) *apiv1.Endpoint {
	ep := &apiv1.Endpoint{
		TypeMeta: apiv1.TypeMeta{APIVersion: apiv1.APIVersion, Kind: apiv1.KindEndpoint},
		Metadata: apiv1.ObjectMeta{
			Name:       r.name,
			Tenant:     n.strs[r.tenant],
			Labels:     n.labelsOf(r),
			Generation: r.generation,
		},
		Spec: apiv1.EndpointSpec{
			Subnet:   n.strs[r.subnet],
			Host:     n.strs[r.host],
			QoSClass: n.strs[r.qos],
		},
		Status: apiv1.EndpointStatus{Host: n.strs[r.statusHost], VNI: r.vni},
	}
	// Binary fields (and the conditions' binary times) are formatted into
	// one string, text fields are pieces of data.
	var (
		stack     [256]byte
		buf       = stack[:0]
		spans     [numStrFields][2]int
		timeStack [4][2]int
		times     = timeStack[:0] // by condition
	)
	d := r.data
	if r.encoding(fIdentity) != encAbsent {
		id, k := uvarintString(d)
		ep.Status.Identity, d = uint32(id), d[k:]
	}
	if r.encoding(fConditions) != encAbsent {
		ep.Status.Conditions, buf, times, d = n.conditions(d, buf, times)
	}
	if r.encoding(fMeta) != encAbsent {
		d = readMeta(d, &ep.Metadata)
	}
	fields := epFields(ep)
	for f := range numStrFields {
		enc := r.encoding(f)
		switch {
		case enc == encAbsent:
			continue
		case enc == encText:
			*fields[f], d = textString(d)
			continue
		case f == fPhase:
			*fields[f] = epPhases[d[0]]
			d = d[1:]
			continue
		}
		start := len(buf)
		buf, d = appendBinary(buf, f, enc, d, r.modRev)
		spans[f] = [2]int{start, len(buf)}
	}
	if len(buf) > 0 {
		s := string(buf)
		for f := range numStrFields {
			if sp := spans[f]; sp[1] > sp[0] {
				*fields[f] = s[sp[0]:sp[1]]
			}
		}
		for i, sp := range times {
			if sp[1] > sp[0] {
				ep.Status.Conditions[i].LastTransitionTime = s[sp[0]:sp[1]]
			}
		}
	}
	return ep
}

// conditions decodes the conditions at the start of d (see
// appendConditions). It formats their binary times onto buf and appends
// the span in buf of each condition's time (empty: the time is text) to
// times, and returns the rest of d.
func (n epNames) conditions(d string, buf []byte, times [][2]int) ([]apiv1.Condition, []byte, [][2]int, string) {
	cnt, k := uvarintString(d)
	d = d[k:]
	conds := make([]apiv1.Condition, cnt)
	for i := range conds {
		var c condRecord
		c, d = nextCondition(d)
		conds[i] = apiv1.Condition{Type: n.strs[c.ids[0]], Status: n.strs[c.ids[1]], Reason: n.strs[c.ids[2]],
			Message: c.message, ObservedGeneration: c.gen, LastTransitionTime: c.time}
		start := len(buf)
		if c.binTime {
			buf = time.Unix(c.sec, 0).UTC().AppendFormat(buf, time.RFC3339)
		}
		times = append(times, [2]int{start, len(buf)})
	}
	return conds, buf, times, d
}

// readMeta decodes the annotations and owner references at the start of d
// into m (see appendMeta) and returns the rest of d.
func readMeta(d string, m *apiv1.ObjectMeta) string {
	n, k := uvarintString(d)
	d = d[k:]
	if n > 0 {
		m.Annotations = make(map[string]string, n-1)
		for range n - 1 {
			var k, v string
			k, d = textString(d)
			v, d = textString(d)
			m.Annotations[k] = v
		}
	}
	n, k = uvarintString(d)
	d = d[k:]
	if n > 0 {
		m.OwnerReferences = make([]apiv1.OwnerReference, n-1)
		for i := range m.OwnerReferences {
			o := &m.OwnerReferences[i]
			o.Kind, d = textString(d)
			o.Name, d = textString(d)
			o.UID, d = textString(d)
		}
	}
	return d
}

// appendBinary formats the binary field f at the start of d onto buf and
// returns the rest of d.
func appendBinary(buf []byte, f epField, enc uint32, d string, modRev int64) ([]byte, string) {
	switch f {
	case fUID:
		return appendUUID(buf, d[:16]), d[16:]
	case fResourceVersion:
		return strconv.AppendInt(buf, modRev, 10), d
	case fCreated:
		sec, k := varintString(d)
		return time.Unix(sec, 0).UTC().AppendFormat(buf, time.RFC3339), d[k:]
	case fSpecMAC, fStatusMAC:
		return appendMAC(buf, d[:6]), d[6:]
	}
	// fSpecIP, fStatusIP
	if enc == encBinary6 {
		var a [16]byte
		copy(a[:], d)
		return netip.AddrFrom16(a).AppendTo(buf), d[16:]
	}
	return netip.AddrFrom4([4]byte{d[0], d[1], d[2], d[3]}).AppendTo(buf), d[4:]
}

// parseUUID parses a UUID in its canonical, lower-case form.
func parseUUID(s string) (u [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := lowerHex(s[i])
		lo, ok2 := lowerHex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		i, j = i+2, j+1
	}
	return u, true
}

func appendUUID(b []byte, u string) []byte {
	for i := range 16 {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[u[i]>>4], hexDigits[u[i]&15])
	}
	return b
}

// parseMAC parses a MAC address in lower-case xx:xx:xx:xx:xx:xx form.
func parseMAC(s string) (mac [6]byte, ok bool) {
	if len(s) != 17 {
		return mac, false
	}
	for i := range 6 {
		if i > 0 && s[3*i-1] != ':' {
			return mac, false
		}
		hi, ok1 := lowerHex(s[3*i])
		lo, ok2 := lowerHex(s[3*i+1])
		if !ok1 || !ok2 {
			return mac, false
		}
		mac[i] = hi<<4 | lo
	}
	return mac, true
}

func appendMAC(b []byte, mac string) []byte {
	for i := range 6 {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hexDigits[mac[i]>>4], hexDigits[mac[i]&15])
	}
	return b
}

const hexDigits = "0123456789abcdef"

func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// parseCanonicalIP parses an IP address written as netip.Addr writes it.
func parseCanonicalIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	var b [64]byte
	return a, string(a.AppendTo(b[:0])) == s
}

// parseSeconds parses an RFC 3339 time in UTC, in seconds, as
// time.RFC3339 formats it.
func parseSeconds(s string) (int64, bool) {
	if len(s) != len("2006-01-02T15:04:05Z") || s[len(s)-1] != 'Z' {
		return 0, false
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, false
	}
	var b [32]byte
	return t.Unix(), string(time.Unix(t.Unix(), 0).UTC().AppendFormat(b[:0], time.RFC3339)) == s
}

// textString returns the text at the start of d (see appendText) and the
// rest of d.
func textString(d string) (string, string) {
	n, k := uvarintString(d)
	return d[k : k+int(n)], d[k+int(n):]
}

// uvarintString is binary.Uvarint on a string holding a valid uvarint.
func uvarintString(s string) (uint64, int) {
	var x uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x80 {
			return x | uint64(c)<<(7*i), i + 1
		}
		x |= uint64(c&0x7f) << (7 * i)
	}
	panic("store: truncated varint in an endpoint record")
}

// varintString is binary.Varint on a string holding a valid varint.
func varintString(s string) (int64, int) {
	ux, n := uvarintString(s)
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x, n
}
