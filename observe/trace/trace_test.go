package trace

import (
	"encoding/json"
	"errors"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"

	apiv1 "github.com/weftnet/weft/api/v1"
)

const t0 = "2030-01-01T00:00:00.000000001Z"

func hop(host, point, verdict string) apiv1.TraceHop {
	return apiv1.TraceHop{Host: host, Point: point, Verdict: verdict, Time: t0}
}

func TestMergeOrdersThePath(t *testing.T) {
	src := []apiv1.TraceHop{hop("h1", "encap", "forward"), hop("h1", "source-veth", "forward"), hop("h1", "underlay", "forward"), hop("h1", "policy", "allow")}
	dst := []apiv1.TraceHop{hop("h3", "deliver", "delivered"), hop("h3", "underlay", "forward"), hop("h3", "decap", "forward")}
	got := Merge(Merge(nil, dst, "h1"), src, "h1")
	got = Merge(got, src, "h1") // again: no duplicates
	var path []string
	for _, h := range got {
		path = append(path, h.Host+":"+h.Point)
	}
	want := []string{"h1:source-veth", "h1:policy", "h1:encap", "h1:underlay", "h3:underlay", "h3:decap", "h3:deliver"}
	if diff := gocmp.Diff(want, path); diff != "" {
		t.Errorf("path (-want +got):\n%s", diff)
	}
	if n, v, _ := Outcome(got); n != 1 || v != apiv1.VerdictDelivered {
		t.Errorf("Outcome = %d, %s", n, v)
	}
	drop := hop("h1", "drop", "dropped")
	drop.Reason = "no-route"
	if _, v, r := Outcome(Merge(src[:2], []apiv1.TraceHop{drop}, "h1")); v != apiv1.VerdictDropped || r != "no-route" {
		t.Errorf("Outcome of a drop = %s, %s", v, r)
	}
}

func TestDecodeReport(t *testing.T) {
	good := Report{Host: "h1", UID: "u", Armed: true, Hops: []apiv1.TraceHop{hop("h1", "policy", "allow")}}
	b, _ := json.Marshal(good)
	r, err := DecodeReport(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := gocmp.Diff(&good, r); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	for name, in := range map[string]string{
		"unknown field": `{"host":"h1","uid":"u","extra":1}`,
		"no host":       `{"uid":"u"}`,
		"other host":    `{"host":"h1","uid":"u","hops":[{"host":"h2","point":"policy","verdict":"allow","time":"` + t0 + `"}]}`,
		"bad point":     `{"host":"h1","uid":"u","hops":[{"host":"h1","point":"moon","verdict":"allow","time":"` + t0 + `"}]}`,
		"bad time":      `{"host":"h1","uid":"u","hops":[{"host":"h1","point":"policy","verdict":"allow","time":"noon"}]}`,
		"trailing":      `{"host":"h1","uid":"u"} {}`,
		"control char":  `{"host":"h\u0001","uid":"u"}`,
	} {
		if _, err := DecodeReport([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzDecodeReport: no input panics, and an accepted report merges.
func FuzzDecodeReport(f *testing.F) {
	b, _ := json.Marshal(Report{Host: "h1", UID: "u", Hops: []apiv1.TraceHop{hop("h1", "drop", "dropped")}})
	f.Add(b)
	f.Add([]byte(`{"host":"h1","uid":"u","armed":true}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := DecodeReport(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		merged := Merge(nil, r.Hops, r.Host)
		if len(merged) > len(r.Hops) {
			t.Fatalf("merge grew %d hops to %d", len(r.Hops), len(merged))
		}
		Outcome(merged)
	})
}
