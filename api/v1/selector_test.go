package v1

import (
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

func req(key, op string, values ...string) LabelSelectorRequirement {
	return LabelSelectorRequirement{Key: key, Operator: op, Values: values}
}

func TestParseSelector(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    LabelSelector
		str     string // String() of the result; "" means in
		wantErr string
	}{
		{name: "empty", in: "", want: LabelSelector{}},
		{name: "blank", in: "  ", want: LabelSelector{}, str: ""},
		{name: "every operator", in: "a=b,c!=d,e in (x,y),f notin (z),g,!h", str: "a=b,c!=d,e in (x,y),f!=z,g,!h",
			want: LabelSelector{
				MatchLabels: map[string]string{"a": "b"},
				MatchExpressions: []LabelSelectorRequirement{
					req("c", OpNotIn, "d"), req("e", OpIn, "x", "y"), req("f", OpNotIn, "z"), req("g", OpExists), req("h", OpDoesNotExist),
				},
			}},
		{name: "double equals and spaces", in: " app == web , tier=db ,  ! legacy ",
			want: LabelSelector{MatchLabels: map[string]string{"app": "web", "tier": "db"},
				MatchExpressions: []LabelSelectorRequirement{req("legacy", OpDoesNotExist)}},
			str: "app=web,tier=db,!legacy"},
		{name: "sets with spaces", in: "env in ( prod , staging ),zone notin (a,b)",
			want: LabelSelector{MatchExpressions: []LabelSelectorRequirement{req("env", OpIn, "prod", "staging"), req("zone", OpNotIn, "a", "b")}},
			str:  "env in (prod,staging),zone notin (a,b)"},
		{name: "empty value", in: "a=",
			want: LabelSelector{MatchLabels: map[string]string{"a": ""}}},
		{name: "prefixed keys", in: "weft.io/tier=front,!weft.io/legacy",
			want: LabelSelector{MatchLabels: map[string]string{"weft.io/tier": "front"},
				MatchExpressions: []LabelSelectorRequirement{req("weft.io/legacy", OpDoesNotExist)}}},
		{name: "repeated equality key becomes In", in: "a=b,a=c",
			want: LabelSelector{MatchLabels: map[string]string{"a": "b"}, MatchExpressions: []LabelSelectorRequirement{req("a", OpIn, "c")}},
			str:  "a=b,a in (c)"},
		{name: "matchLabels are printed first, sorted", in: "z!=1,b=2,a=1",
			want: LabelSelector{MatchLabels: map[string]string{"a": "1", "b": "2"}, MatchExpressions: []LabelSelectorRequirement{req("z", OpNotIn, "1")}},
			str:  "a=1,b=2,z!=1"},
		{name: "key named in", in: "in,notin=x",
			want: LabelSelector{MatchLabels: map[string]string{"notin": "x"}, MatchExpressions: []LabelSelectorRequirement{req("in", OpExists)}},
			str:  "notin=x,in"},
		{name: "trailing comma", in: "a=b,", wantErr: "after the last ','"},
		{name: "leading comma", in: ",a=b", wantErr: "want a label key at offset 0"},
		{name: "bang without key", in: "!", wantErr: "want a label key after '!'"},
		{name: "unknown operator", in: "a exists", wantErr: `got "exists"`},
		{name: "greater than is not supported", in: "a>1", wantErr: "invalid label key"},
		{name: "missing parenthesis", in: "a in x", wantErr: "want '(' after"},
		{name: "unclosed set", in: "a in (x,y", wantErr: "want ')'"},
		{name: "empty set is the set of the empty value", in: "a in ()",
			want: LabelSelector{MatchExpressions: []LabelSelectorRequirement{req("a", OpIn, "")}}},
		{name: "empty values in a set", in: "a notin (,x,)",
			want: LabelSelector{MatchExpressions: []LabelSelectorRequirement{req("a", OpNotIn, "", "x", "")}}},
		{name: "repeated empty equality", in: "a=,a=",
			want: LabelSelector{MatchLabels: map[string]string{"a": ""}, MatchExpressions: []LabelSelectorRequirement{req("a", OpIn, "")}},
			str:  "a=,a in ()"},
		{name: "garbage after value", in: "a=b c", wantErr: "want ',' at offset 4"},
		{name: "invalid key", in: "-a=b", wantErr: "invalid label key"},
		{name: "invalid value", in: "a=b.", wantErr: `invalid label value "b."`},
		{name: "invalid value in a set", in: "a in (ok,-no)", wantErr: `matchExpressions[0].values[1]: invalid label value "-no"`},
		{name: "33 requirements", in: strings.Repeat("a,", 32) + "a",
			wantErr: `": must have at most 32 requirements (matchLabels and matchExpressions together), got 33`},
		{name: "65 values", in: "a in (" + strings.Repeat("v,", 64) + "v)",
			wantErr: "matchExpressions[0].values: must have at most 64 values, got 65"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSelector(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSelector(%q) error %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSelector(%q): %v", tt.in, err)
			}
			if diff := gocmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParseSelector(%q) (-want +got):\n%s", tt.in, diff)
			}
			str := tt.str
			if str == "" {
				str = strings.TrimSpace(tt.in)
			}
			if got.String() != str {
				t.Errorf("String() = %q, want %q", got.String(), str)
			}
			again, err := ParseSelector(got.String())
			if err != nil {
				t.Fatalf("ParseSelector(String()) = %v", err)
			}
			if diff := gocmp.Diff(got, again); diff != "" {
				t.Errorf("round trip through %q (-first +second):\n%s", got.String(), diff)
			}
		})
	}
}

func TestSelectorStringOfBuiltSelectors(t *testing.T) {
	tests := []struct {
		name string
		sel  LabelSelector
		want string
	}{
		{name: "empty", sel: LabelSelector{}, want: ""},
		{name: "In with one value stays a set", sel: LabelSelector{MatchExpressions: []LabelSelectorRequirement{req("a", OpIn, "b")}}, want: "a in (b)"},
		{name: "NotIn with several values", sel: LabelSelector{MatchExpressions: []LabelSelectorRequirement{req("a", OpNotIn, "b", "c")}}, want: "a notin (b,c)"},
		{name: "values keep their order", sel: LabelSelector{MatchExpressions: []LabelSelectorRequirement{req("a", OpIn, "z", "b")}}, want: "a in (z,b)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.sel.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
			back, err := ParseSelector(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if diff := gocmp.Diff(tt.sel, back); diff != "" {
				t.Errorf("ParseSelector(String()) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSelectorMatches(t *testing.T) {
	labels := map[string]string{"app": "web", "tier": "front", "env": ""}
	tests := []struct {
		sel     string
		want    bool // on labels
		wantNil bool // on no labels at all
	}{
		{"", true, true},
		{"app=web", true, false},
		{"app=db", false, false},
		{"app=web,tier=front", true, false},
		{"app=web,tier=back", false, false},
		{"env=", true, false},
		{"env", true, false},
		{"missing", false, false},
		{"!missing", true, true},
		{"!app", false, true},
		{"app!=db", true, true}, // NotIn matches an absent key
		{"app!=web", false, true},
		{"tier in (front,back)", true, false},
		{"tier in (back)", false, false},
		{"missing in (x)", false, false},
		{"tier notin (back,side)", true, true},
		{"tier notin (front)", false, true},
		{"app=web,a=b,a=c", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.sel, func(t *testing.T) {
			sel, err := ParseSelector(tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Matches(labels); got != tt.want {
				t.Errorf("%q.Matches(%v) = %v, want %v", tt.sel, labels, got, tt.want)
			}
			if got := sel.Matches(nil); got != tt.wantNil {
				t.Errorf("%q.Matches(nil) = %v, want %v", tt.sel, got, tt.wantNil)
			}
		})
	}
	t.Run("unknown operator never matches", func(t *testing.T) {
		sel := LabelSelector{MatchExpressions: []LabelSelectorRequirement{req("app", "Equals", "web")}}
		if sel.Matches(labels) {
			t.Error("matched")
		}
	})
	t.Run("empty", func(t *testing.T) {
		if !(LabelSelector{}).Empty() || !(LabelSelector{MatchLabels: map[string]string{}}).Empty() {
			t.Error("empty selector not Empty")
		}
		if (LabelSelector{MatchExpressions: []LabelSelectorRequirement{req("a", OpExists)}}).Empty() {
			t.Error("selector with a requirement is Empty")
		}
	})
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"", "a=b,c!=d,e in (x,y),f notin (z),g,!h", "a==b", "a in (,)", "x/y=z", "a=b,a=c",
		strings.Repeat("a,", 31) + "b", "a in (" + strings.Repeat("v,", 64) + "v)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		again, err := ParseSelector(sel.String())
		if err != nil {
			t.Fatalf("ParseSelector(%q) = %#v, whose String %q does not parse: %v", s, sel, sel.String(), err)
		}
		if diff := gocmp.Diff(sel, again); diff != "" {
			t.Fatalf("round trip of %q through %q (-first +second):\n%s", s, sel.String(), diff)
		}
	})
}
