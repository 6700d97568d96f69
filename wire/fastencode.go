package wire

import (
	"encoding/base64"
	"slices"
	"strconv"

	"github.com/weftnet/weft/internal/jsonscan"
)

// A one-pass encoder for the body of a Delta, the frame a controller
// writes by the thousand in a cold start. encoding/json walks the struct by
// reflection and, for each resource's Data (a json.RawMessage), scans it
// with its validity state machine while compacting it into the output: a
// view's bytes were read twice and copied through a byte-at-a-time loop.
// This encoder writes the fields directly and splices each Data in one
// copy, after a check that it is exactly one valid JSON value without
// whitespace outside its strings (the form json.Marshal writes, which
// encoding/json's compaction leaves unchanged), or without the check when
// the sender vouches for that form (Delta.CompactData). It writes exactly the bytes
// json.Encoder (without HTML escaping, without the trailing newline)
// writes; on anything it does not handle (a key with a character
// encoding/json would escape, a Data that is not compact or not valid) it
// gives up and encoding/json encodes the frame (FuzzAppendDelta checks
// both).

// appendDeltaJSON appends the JSON of m to dst, or reports false with dst
// unspecified past its original length.
func appendDeltaJSON(dst []byte, m *Delta) ([]byte, bool) {
	// Grown once, with room for the seal (Conn.WriteMessage): a snapshot
	// is the first frame on a connection, whose buffer starts small.
	dst = slices.Grow(dst, deltaFrameSize(m))
	dst = append(dst, `{"fromVersion":`...)
	dst = strconv.AppendUint(dst, m.FromVersion, 10)
	dst = append(dst, `,"toVersion":`...)
	dst = strconv.AppendUint(dst, m.ToVersion, 10)
	if m.Snapshot {
		dst = append(dst, `,"snapshot":true`...)
	}
	if m.More {
		dst = append(dst, `,"more":true`...)
	}
	if len(m.Upserts) > 0 {
		dst = append(dst, `,"upserts":[`...)
		for i := range m.Upserts {
			r := &m.Upserts[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			var ok bool
			if dst, ok = appendKeyJSON(append(dst, `{"key":`...), r.Key); !ok {
				return dst, false
			}
			if len(r.Data) > 0 || len(r.Tail) > 0 {
				if !m.CompactData && (len(r.Tail) > 0 || !compactJSON(r.Data)) {
					return dst, false // encoding/json checks it, joined
				}
				dst = append(append(append(dst, `,"data":`...), r.Data...), r.Tail...)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if len(m.Deletes) > 0 {
		dst = append(dst, `,"deletes":[`...)
		for i, k := range m.Deletes {
			if i > 0 {
				dst = append(dst, ',')
			}
			var ok bool
			if dst, ok = appendKeyJSON(dst, k); !ok {
				return dst, false
			}
		}
		dst = append(dst, ']')
	}
	if len(m.ViewHash) > 0 {
		dst = append(dst, `,"viewHash":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, m.ViewHash)
		dst = append(dst, '"')
	}
	return append(dst, '}'), true
}

// deltaFrameSize returns an upper bound of the size of m's frame in the
// plain form appendDeltaJSON writes, with its header and seal.
func deltaFrameSize(m *Delta) int {
	n := 5 + SealOverhead + len(`{"fromVersion":,"toVersion":,"snapshot":true,"more":true,"upserts":[],"deletes":[],"viewHash":""}`) +
		2*20 + base64.StdEncoding.EncodedLen(len(m.ViewHash))
	for i := range m.Upserts {
		r := &m.Upserts[i]
		n += len(`{"key":{"type":"","id":""},"data":},`) + len(r.Key.Type) + len(r.Key.ID) + len(r.Data) + len(r.Tail)
	}
	for _, k := range m.Deletes {
		n += len(`{"type":"","id":""},`) + len(k.Type) + len(k.ID)
	}
	return n
}

// appendKeyJSON appends {"type":…,"id":…}, or reports false if a string
// needs escaping.
func appendKeyJSON(dst []byte, k ResourceKey) ([]byte, bool) {
	if !plainString(k.Type) || !plainString(k.ID) {
		return dst, false
	}
	dst = append(dst, `{"type":"`...)
	dst = append(dst, k.Type...)
	dst = append(dst, `","id":"`...)
	dst = append(dst, k.ID...)
	return append(dst, `"}`...), true
}

// plainString reports whether encoding/json (without HTML escaping) writes
// s between quotes as it is: printable ASCII other than '"' and '\'.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// compactJSON reports whether b is exactly one valid JSON value with no
// whitespace outside its strings: encoding/json's compaction (without
// HTML escaping) leaves such a value as it is.
func compactJSON(b []byte) bool {
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++ // the escaped byte cannot end the string
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case ' ', '\t', '\n', '\r':
			return false
		}
	}
	var s jsonscan.Scanner
	s.Reset(b)
	v, ok := s.Value()
	return ok && len(v) == len(b)
}
