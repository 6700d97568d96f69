package wire

import (
	"encoding/base64"
	"encoding/json"

	"github.com/weftnet/weft/internal/jsonscan"
)

// A one-pass decoder for the bodies of the frames that a session carries
// by the thousand, Delta and Ack. json.Unmarshal reads a body twice (a
// validity scan, then the decoding) and the data of every resource a third
// time (a scan to find its end before copying it); this decoder reads each
// byte once.
//
// It decodes only the plain form that AppendMessage writes and other
// encoders of JSON normally produce: the struct's own field names (unknown
// fields are skipped), strings without escapes, unsigned integers, true
// and false, arrays and objects, any whitespace. On anything else (an
// escape, null, a field name that differs from a known one only in case,
// a repeated field, a number that is not a plain unsigned integer,
// non-ASCII in a field name, invalid JSON) it gives up, and the body is
// decoded by json.Unmarshal, so the result, and the error, are exactly
// json.Unmarshal's for every input (FuzzFastDecode checks this). The
// scanning is jsonscan's; this file adds the types of a Delta.

// fastDecodeDelta decodes b into m, which must be zero. It reports false
// if json.Unmarshal must decode b instead (m is then to be discarded).
func fastDecodeDelta(b []byte, m *Delta) bool {
	var d fastDecoder
	d.Reset(b)
	return d.Document(func(key []byte) bool {
		switch string(key) {
		case "fromVersion":
			return d.Once(0) && d.Uint64(&m.FromVersion)
		case "toVersion":
			return d.Once(1) && d.Uint64(&m.ToVersion)
		case "snapshot":
			return d.Once(2) && d.Bool(&m.Snapshot)
		case "more":
			return d.Once(3) && d.Bool(&m.More)
		case "upserts":
			return d.Once(4) && d.resources(&m.Upserts)
		case "deletes":
			return d.Once(5) && d.keys(&m.Deletes)
		case "viewHash":
			return d.Once(6) && d.base64(&m.ViewHash)
		}
		return d.UnknownField(key, deltaFields)
	})
}

var deltaFields = []string{"fromVersion", "toVersion", "snapshot", "more", "upserts", "deletes", "viewHash"}

// fastDecodeAck decodes b into m, which must be zero, or reports false
// (see fastDecodeDelta).
func fastDecodeAck(b []byte, m *Ack) bool {
	var d fastDecoder
	d.Reset(b)
	return d.Document(func(key []byte) bool {
		switch string(key) {
		case "version":
			return d.Once(0) && d.Uint64(&m.Version)
		case "error":
			return d.Once(1) && d.String(&m.Error)
		}
		return d.UnknownField(key, ackFields)
	})
}

var ackFields = []string{"version", "error"}

// fastDecoder is a jsonscan.Scanner with the types of a Delta.
type fastDecoder struct {
	jsonscan.Scanner
	// lastType is the last resource type decoded: the next one with the
	// same bytes shares its string.
	lastType string
}

// base64 decodes a []byte field as json.Unmarshal does.
func (d *fastDecoder) base64(v *[]byte) bool {
	s, ok := d.RawString()
	if !ok {
		return false
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(b, s)
	if err != nil {
		return false
	}
	*v = b[:n]
	return true
}

// resources decodes an array of resources into *v, which must be nil; an
// empty array gives empty, not nil (as json.Unmarshal).
func (d *fastDecoder) resources(v *[]Resource) bool {
	ok := d.Array(func() bool {
		var r Resource
		ok := d.Object(func(key []byte) bool {
			switch string(key) {
			case "key":
				return d.Once(0) && d.key(&r.Key)
			case "data":
				if !d.Once(1) {
					return false
				}
				raw, ok := d.Value()
				if ok {
					r.Data = json.RawMessage(append([]byte(nil), raw...))
				}
				return ok
			}
			return d.UnknownField(key, resourceFields)
		})
		*v = append(*v, r)
		return ok
	})
	if ok && *v == nil {
		*v = []Resource{}
	}
	return ok
}

var resourceFields = []string{"key", "data"}

// keys decodes an array of keys into *v, which must be nil (see
// resources).
func (d *fastDecoder) keys(v *[]ResourceKey) bool {
	ok := d.Array(func() bool {
		var k ResourceKey
		ok := d.key(&k)
		*v = append(*v, k)
		return ok
	})
	if ok && *v == nil {
		*v = []ResourceKey{}
	}
	return ok
}

func (d *fastDecoder) key(k *ResourceKey) bool {
	return d.Object(func(key []byte) bool {
		switch string(key) {
		case "type":
			if !d.Once(0) {
				return false
			}
			s, ok := d.RawString()
			if !ok {
				return false
			}
			if string(s) != d.lastType {
				d.lastType = string(s)
			}
			k.Type = d.lastType
			return true
		case "id":
			return d.Once(1) && d.String(&k.ID)
		}
		return d.UnknownField(key, keyFields)
	})
}

var keyFields = []string{"type", "id"}
