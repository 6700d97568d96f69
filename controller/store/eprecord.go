package store

import (
	"encoding/binary"
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
	numEpFields
)

// Encodings of an epField.
const (
	encAbsent  = 0 // "" (fAPIVersion and fKind: the constant)
	encText    = 1 // uvarint length, then the bytes
	encBinary  = 2 // the field's binary form
	encBinary6 = 3 // an IPv6 address
)

// epPhases are the phases kept as one byte.
var epPhases = [...]string{apiv1.PhasePending, apiv1.PhaseReady, apiv1.PhaseFailed, apiv1.PhaseLost}

// epFields returns pointers to ep's fields kept in data, by epField.
func epFields(ep *apiv1.Endpoint) [numEpFields]*string {
	return [numEpFields]*string{
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
	for f, p := range epFields(ep) {
		var enc uint32
		b, enc = appendField(b, epField(f), *p, modRev)
		r.enc |= enc << (2 * f)
	}
	r.data = string(b)
	return r
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
	fields := epFields(ep)
	d := r.data
	// Binary fields are formatted into one string, text fields are pieces
	// of data.
	var (
		stack [256]byte
		buf   = stack[:0]
		spans [numEpFields][2]uint16
	)
	for f := range numEpFields {
		enc := r.encoding(f)
		switch {
		case enc == encAbsent:
			continue
		case enc == encText:
			n, k := uvarintString(d)
			*fields[f] = d[k : k+int(n)]
			d = d[k+int(n):]
			continue
		case f == fPhase:
			*fields[f] = epPhases[d[0]]
			d = d[1:]
			continue
		}
		start := len(buf)
		buf, d = appendBinary(buf, f, enc, d, r.modRev)
		spans[f] = [2]uint16{uint16(start), uint16(len(buf))}
	}
	if len(buf) > 0 {
		s := string(buf)
		for f := range numEpFields {
			if sp := spans[f]; sp[1] > sp[0] {
				*fields[f] = s[sp[0]:sp[1]]
			}
		}
	}
	return ep
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
