package v1

import (
	"encoding/json"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

func TestBandwidthBitsPerSecond(t *testing.T) {
	tests := []struct {
		in      Bandwidth
		want    uint64
		wantErr string
	}{
		{in: "", want: 0},
		{in: "0", want: 0},
		{in: "1000000", want: 1_000_000},
		{in: "10Gbit", want: 10_000_000_000},
		{in: "25G", want: 25_000_000_000},
		{in: "100Mbit", want: 100_000_000},
		{in: "100mbit", want: 100_000_000},
		{in: "500k", want: 500_000},
		{in: "1.5Gbps", want: 1_500_000_000},
		{in: "2T", want: 2_000_000_000_000},
		{in: "64kbit/s", want: 64_000},
		{in: "8 Mb/s", want: 8_000_000},
		{in: "  10G  ", want: 10_000_000_000},
		{in: "1e9", want: 1_000_000_000},
		{in: "1000Tbit", want: 1e15},
		{in: "1001T", wantErr: "more than 1Pbit/s"},
		{in: "-1G", wantErr: "want a number"},
		{in: "fast", wantErr: `bandwidth "fast"`},
		{in: "G", wantErr: "want a number"},
		{in: "10Gbytes", wantErr: "want a number"},
		{in: "NaN", wantErr: "want a number"},
		{in: "nanbit", wantErr: "want a number"},
		{in: "Inf", wantErr: "more than 1Pbit/s"},
	}
	for _, tt := range tests {
		t.Run(string(tt.in), func(t *testing.T) {
			got, err := tt.in.BitsPerSecond()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("BitsPerSecond(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("BitsPerSecond(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestBandwidthUnmarshalJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    HostSpec
		wantErr string
	}{
		{name: "string", in: `{"capacity":"10Gbit"}`, want: HostSpec{Capacity: "10Gbit"}},
		{name: "escaped string", in: `{"capacity":"10\u0047"}`, want: HostSpec{Capacity: "10G"}},
		{name: "number kept as written", in: `{"capacity":1e10}`, want: HostSpec{Capacity: "1e10"}},
		{name: "integer", in: `{"capacity":25000000000}`, want: HostSpec{Capacity: "25000000000"}},
		{name: "null", in: `{"capacity":null}`, want: HostSpec{}},
		{name: "boolean", in: `{"capacity":true}`, wantErr: "want a string or a number, got true"},
		{name: "object", in: `{"capacity":{}}`, wantErr: "want a string or a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got HostSpec
			err := json.Unmarshal([]byte(tt.in), &got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := gocmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
