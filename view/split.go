package view

import (
	"bytes"
	"strings"
)

// appliesKey is how the applies member of a Policy starts: it is the last
// field of the struct, so Encode writes it last.
const appliesKey = `"applies":[`

// SplitPolicy splits the Data of a policy resource in the form Encode
// writes into the part that is the same on every host that holds the
// policy — everything before its applies member — and the local
// endpoints it applies to, the one part that differs from host to host.
// An agent that translated a policy once can thus recognise the same
// compiled policy in another view, or another host's view, by its shared
// bytes, and decode only the applies list.
//
// It reports false unless data ends in an applies member that is an
// array of plain strings (printable ASCII other than '"' and '\'), then
// the closing brace, with no whitespace between them. When it reports
// true, applies is what json.Unmarshal makes of that member, and for any
// two such data a and b with the same shared part, a is valid JSON if and
// only if b is, and their Decode results differ only in Applies: the
// shared part ends before a complete member and the closing brace, whose
// key can only be the object's own "applies" key (a '"' that is not
// preceded by a backslash is a string delimiter, and one followed by
// applies'":' opens a key), at the top level (the object ends right after
// it), and json.Unmarshal takes the last of repeated members. shared is a
// slice of data.
func SplitPolicy(data []byte) (shared []byte, applies []string, ok bool) {
	if len(data) < len(appliesKey)+3 || data[len(data)-1] != '}' || data[len(data)-2] != ']' {
		return nil, nil, false
	}
	i := bytes.LastIndex(data, []byte(appliesKey))
	if i <= 0 || data[i-1] == '\\' {
		return nil, nil, false
	}
	// One allocation for the text of all the strings, which the
	// strings share.
	rest := string(data[i+len(appliesKey) : len(data)-2])
	applies = make([]string, 0, 1+strings.Count(rest, `","`))
	for len(rest) > 0 {
		if rest[0] != '"' {
			return nil, nil, false
		}
		j := 1
		for ; j < len(rest) && rest[j] != '"'; j++ {
			if c := rest[j]; c < 0x20 || c > 0x7e || c == '\\' {
				return nil, nil, false
			}
		}
		if j == len(rest) {
			return nil, nil, false
		}
		applies = append(applies, rest[1:j])
		rest = rest[j+1:]
		if len(rest) == 0 {
			break
		}
		if rest[0] != ',' || len(rest) == 1 {
			return nil, nil, false
		}
		rest = rest[1:]
	}
	return data[:i], applies, true
}
