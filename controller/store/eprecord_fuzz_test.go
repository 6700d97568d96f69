package store

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// FuzzEndpointRecord encodes endpoints decoded from arbitrary JSON (what
// etcd holds) as cache records: the endpoint built back from a record
// equals the one decoded, and dropping it releases every interned value.
func FuzzEndpointRecord(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 16 {
		b, err := json.Marshal(randomEndpoint(rng))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, int64(rng.IntN(1000)), rng.Int64())
	}
	f.Fuzz(func(t *testing.T, data []byte, createRev, modRev int64) {
		var ep apiv1.Endpoint
		if json.Unmarshal(data, &ep) != nil {
			return
		}
		tbl := newEpTable()
		r := tbl.newRecord(&ep, createRev, modRev)
		if diff := cmp.Diff(&ep, tbl.endpoint(r)); diff != "" {
			t.Fatalf("endpoint from its record (-decoded +record):\n%s", diff)
		}
		tbl.drop(r)
		if n, m := tbl.strs.len(), tbl.labels.len(); n != 0 || m != 0 {
			t.Fatalf("%d strings, %d label sets left interned", n, m)
		}
	})
}
