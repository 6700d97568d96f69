package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/internal/buildinfo"
)

// TestVersion: `weft-cni version` prints what `weft version --client`
// prints of its binary.
func TestVersion(t *testing.T) {
	bi := buildinfo.Read()
	for _, tc := range []struct {
		name    string
		args    []string
		want    string // text; "" for JSON
		wantErr string
	}{
		{"text", nil, "weft-cni " + bi.String() + "\n", ""},
		{"text by name", []string{"-o", "text"}, "weft-cni " + bi.String() + "\n", ""},
		{"json", []string{"-o", "json"}, "", ""},
		{"bad format", []string{"-o", "yaml"}, "", `want text or json`},
		{"extra argument", []string{"now"}, "", `unexpected argument "now"`},
		{"unknown flag", []string{"--client"}, "", "not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := printVersion(tc.args, &out)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("printVersion(%q) = %v, want an error with %q", tc.args, err, tc.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("printVersion(%q): %v", tc.args, err)
			case tc.want != "":
				if diff := cmp.Diff(tc.want, out.String()); diff != "" {
					t.Errorf("output (-want +got):\n%s", diff)
				}
			default:
				var got buildinfo.Info
				if err := json.Unmarshal(out.Bytes(), &got); err != nil {
					t.Fatalf("output %q: %v", out.String(), err)
				}
				if diff := cmp.Diff(bi, got); diff != "" {
					t.Errorf("JSON (-want +got):\n%s", diff)
				}
			}
		})
	}
}
