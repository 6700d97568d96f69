package client

import (
	"bytes"
	"io"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// FuzzWatchDecode feeds arbitrary bytes to the watch stream decoder as a
// controller's response body: it must not panic, and every event it
// delivers must be well-formed (an object for ADDED, MODIFIED and DELETED,
// an error for ERROR), with at most one ERROR, last.
func FuzzWatchDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"ADDED","object":{"apiVersion":"weft/v1","kind":"VPC","metadata":{"name":"main","tenant":"acme"},"spec":{"cidrs":["10.0.0.0/16"]}}}` + "\n",
		`{"type":"DELETED","object":{"kind":"Tenant","metadata":{"name":"acme"}}}{"type":"MODIFIED","object":{}}`,
		`{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Gone","message":"too old"}}`,
		`{"type":"BOOKMARK"}`,
		`{"type":"ADDED","object":[1,2]}`,
		`{"type":`,
		"",
	} {
		f.Add(byte(0), []byte(s))
	}
	kinds := apiv1.Kinds()
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		k := kinds[int(kind)%len(kinds)]
		ch := make(chan WatchEvent, 16)
		go (&Client{}).readWatch(t.Context(), k, "/watch", io.NopCloser(bytes.NewReader(body)), ch)
		sawError := false
		for ev := range ch {
			if sawError {
				t.Fatalf("event %+v after an ERROR", ev)
			}
			switch ev.Type {
			case Added, Modified, Deleted:
				if ev.Object == nil || ev.Err != nil {
					t.Fatalf("%s event %+v: want an object and no error", ev.Type, ev)
				}
			case Error:
				if ev.Err == nil || ev.Object != nil {
					t.Fatalf("ERROR event %+v: want an error and no object", ev)
				}
				sawError = true
			default:
				t.Fatalf("event of type %q", ev.Type)
			}
		}
	})
}
