package main

import (
	"strings"
	"testing"

	apiv1 "github.com/weftnet/weft/api/v1"
)

func TestJSONPath(t *testing.T) {
	doc, err := apiv1.DecodeJSONValue([]byte(`{
		"kind": "List",
		"items": [
			{"metadata": {"name": "web-1", "labels": {"app": "web", "weft.io/tier": "front"}}, "spec": {"host": "h1"},
			 "status": {"ip": "10.0.1.2", "vni": 4096, "conditions": [{"type": "PolicyProgrammed", "status": "True"}, {"type": "Ready", "status": "False"}]}},
			{"metadata": {"name": "db-1"}, "spec": {"host": "h2"},
			 "status": {"ip": "10.0.1.3", "vni": 4097, "conditions": [{"type": "Ready", "status": "True"}]}}
		]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, tmpl, want, wantErr string
	}{
		{name: "a field", tmpl: "{.kind}", want: "List"},
		{name: "all items", tmpl: "{.items[*].metadata.name}", want: "web-1 db-1"},
		{name: "an index", tmpl: "{.items[1].spec.host}", want: "h2"},
		{name: "a negative index", tmpl: "{.items[-1].metadata.name}", want: "db-1"},
		{name: "out of range", tmpl: "{.items[5].metadata.name}", want: ""},
		{name: "a missing field prints nothing", tmpl: "{.items[1].metadata.labels.app}", want: ""},
		{name: "a number", tmpl: "{.items[0].status.vni}", want: "4096"},
		{name: "an object as JSON", tmpl: "{.items[0].spec}", want: `{"host":"h1"}`},
		{name: "text around", tmpl: "ip={.items[0].status.ip};", want: "ip=10.0.1.2;"},
		{name: "a quoted key with dots", tmpl: "{.items[0].metadata.labels['weft.io/tier']}", want: "front"},
		{name: "double-quoted key", tmpl: `{.items[0].metadata.labels["app"]}`, want: "web"},
		{name: "a filter", tmpl: `{.items[0].status.conditions[?(@.type=="Ready")].status}`, want: "False"},
		{name: "a filter with single quotes", tmpl: `{.items[*].status.conditions[?(@.type=='Ready')].status}`, want: "False True"},
		{name: "a not-equal filter", tmpl: `{.items[?(@.spec.host!="h1")].metadata.name}`, want: "db-1"},
		{name: "a number filter", tmpl: `{.items[?(@.status.vni==4097)].metadata.name}`, want: "db-1"},
		{name: "an existence filter", tmpl: `{.items[?(@.metadata.labels)].metadata.name}`, want: "web-1"},
		{name: "range", tmpl: `{range .items[*]}{.metadata.name}{"\t"}{.status.ip}{"\n"}{end}`, want: "web-1\t10.0.1.2\ndb-1\t10.0.1.3\n"},
		{name: "range over an array value", tmpl: `{range .items}[{.spec.host}]{end}`, want: "[h1][h2]"},
		{name: "nested range and the root", tmpl: `{range .items[*]}{range .status.conditions[*]}{.type},{end}{$.kind};{end}`, want: "PolicyProgrammed,Ready,List;Ready,List;"},
		{name: "star of an object", tmpl: `{.items[0].metadata.labels.*}`, want: "web front"},
		{name: "a bare path", tmpl: ".items[0].metadata.name", want: "web-1"},
		{name: "a bare path without a dot", tmpl: "items[1].metadata.name", want: "db-1"},
		{name: "the current object", tmpl: "{@.kind}", want: "List"},
		{name: "recursive descent", tmpl: "{..name}", wantErr: "recursive descent (..) is not supported"},
		{name: "a slice", tmpl: "{.items[0:1]}", wantErr: "[0:1] is not supported"},
		{name: "a union", tmpl: "{.items[0,1]}", wantErr: "[0,1] is not supported"},
		{name: "another operator", tmpl: "{.items[?(@.status.vni>4096)]}", wantErr: "only == and != are supported"},
		{name: "unclosed", tmpl: "{.kind", wantErr: "unclosed {"},
		{name: "range without end", tmpl: "{range .items[*]}{.kind}", wantErr: "{range} without {end}"},
		{name: "end without range", tmpl: "{.kind}{end}", wantErr: "{end} without {range}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseJSONPath(tc.tmpl)
			var got string
			if err == nil {
				got, err = p.execute(doc)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
