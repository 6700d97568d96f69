package view

import (
	"testing"

	"github.com/weftnet/weft/wire"
)

// BenchmarkDecode decodes the resources of samples (a host, VPCs,
// endpoints with labels, policies, QoS classes) with json.Unmarshal (what
// Decode was), Decode, and one Decoder; one op decodes them all.
func BenchmarkDecode(b *testing.B) {
	var res []wire.Resource
	for _, s := range samples() {
		r, err := Encode(s)
		if err != nil {
			b.Fatal(err)
		}
		res = append(res, r)
	}
	var dec Decoder
	for _, f := range []struct {
		name   string
		decode func(wire.Resource) (any, error)
	}{{"json", reference}, {"Decode", Decode}, {"Decoder", dec.Decode}} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, r := range res {
					if _, err := f.decode(r); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
