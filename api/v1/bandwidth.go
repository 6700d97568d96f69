package v1

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Bandwidth is a rate in bits per second written as a number with an
// optional unit: "10Gbit", "25G", "100Mbit", "500k", "1000000". Units are
// decimal (k=1e3, M=1e6, G=1e9, T=1e12); a trailing "bit", "bps" or "b/s" is accepted.
type Bandwidth string

// BitsPerSecond parses the bandwidth. The empty string is 0.
func (b Bandwidth) BitsPerSecond() (uint64, error) {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, nil
	}
	low := strings.ToLower(s)
	for _, suf := range []string{"bit/s", "bits", "bit", "bps", "b/s"} {
		if strings.HasSuffix(low, suf) {
			low = strings.TrimSuffix(low, suf)
			break
		}
	}
	mult := uint64(1)
	if n := len(low); n > 0 {
		switch low[n-1] {
		case 'k':
			mult, low = 1e3, low[:n-1]
		case 'm':
			mult, low = 1e6, low[:n-1]
		case 'g':
			mult, low = 1e9, low[:n-1]
		case 't':
			mult, low = 1e12, low[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(low), 64)
	if err != nil || !(v >= 0) { // !(v >= 0) also rejects NaN
		return 0, fmt.Errorf("bandwidth %q: want a number with an optional unit (k, M, G, T) such as 10Gbit", s)
	}
	out := v * float64(mult)
	if out > 1e15 {
		return 0, fmt.Errorf("bandwidth %q: more than 1Pbit/s", s)
	}
	return uint64(out), nil
}

// UnmarshalJSON accepts a string or a plain JSON number of bit/s, so that
// YAML "capacity: 10000000000" works as the type's documentation promises.
// A number is kept as written.
func (b *Bandwidth) UnmarshalJSON(data []byte) error {
	switch {
	case len(data) == 0:
	case data[0] == '"':
		return json.Unmarshal(data, (*string)(b))
	case data[0] == '-' || data[0] >= '0' && data[0] <= '9':
		// The decoder has already checked that data is one valid JSON value.
		*b = Bandwidth(data)
		return nil
	case string(data) == "null":
		return nil
	}
	return fmt.Errorf("bandwidth: want a string or a number, got %s", data)
}
