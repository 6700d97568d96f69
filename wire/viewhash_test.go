package wire

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestViewHash(t *testing.T) {
	r := func(typ, id, data string) Resource {
		return Resource{Key: ResourceKey{Type: typ, ID: id}, Data: json.RawMessage(data)}
	}
	base := []Resource{r("endpoint", "t/a", `{"ip":"10.0.0.2"}`), r("vpc", "t/v", `{"vni":7}`)}
	h := ViewHash(append([]Resource(nil), base...))
	if len(h) != ViewHashSize {
		t.Fatalf("hash of %d bytes, want %d", len(h), ViewHashSize)
	}
	tests := []struct {
		name string
		rs   []Resource
		same bool
	}{
		{"same set, other order", []Resource{base[1], base[0]}, true},
		{"data changed", []Resource{r("endpoint", "t/a", `{"ip":"10.0.0.3"}`), base[1]}, false},
		{"resource missing", []Resource{base[0]}, false},
		{"resource added", []Resource{base[0], base[1], r("qos", "t/q", `{}`)}, false},
		{"id renamed", []Resource{r("endpoint", "t/b", `{"ip":"10.0.0.2"}`), base[1]}, false},
		{"boundary shifted between id and data", []Resource{r("endpoint", "t/a{", `"ip":"10.0.0.2"}`), base[1]}, false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bytes.Equal(ViewHash(tt.rs), h); got != tt.same {
				t.Errorf("same hash = %v, want %v", got, tt.same)
			}
		})
	}
	if !bytes.Equal(ViewHash(nil), ViewHash([]Resource{})) {
		t.Error("nil and empty sets hash differently")
	}
}
