package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	apiv1 "github.com/weftnet/weft/api/v1"
	"sigs.k8s.io/yaml"
)

// Output formats of -o.
const (
	formatTable    = "table"
	formatJSON     = "json"
	formatYAML     = "yaml"
	formatWide     = "wide"      // get: the table with more columns
	formatName     = "name"      // get: kind/name per line
	formatJSONPath = "jsonpath=" // get: a template (jsonpath.go)
)

func checkFormat(f string) error {
	switch f {
	case formatTable, formatJSON, formatYAML:
		return nil
	}
	return usageErrorf("-o %q: want table, json or yaml", f)
}

// output is a parsed -o of get.
type output struct {
	format   string    // formatTable, formatWide, formatJSON, formatYAML, formatName or formatJSONPath
	template *jsonPath // of formatJSONPath
}

// parseOutput reads -o of get: table, wide, json, yaml, name or
// jsonpath=TEMPLATE (also jsonpath='TEMPLATE').
func parseOutput(o string) (output, error) {
	switch o {
	case formatTable, formatWide, formatJSON, formatYAML, formatName:
		return output{format: o}, nil
	}
	if tmpl, ok := strings.CutPrefix(o, formatJSONPath); ok {
		if len(tmpl) >= 2 && tmpl[0] == '\'' && tmpl[len(tmpl)-1] == '\'' {
			tmpl = tmpl[1 : len(tmpl)-1]
		}
		p, err := parseJSONPath(tmpl)
		if err != nil {
			return output{}, usageErrorf("-o: %v", err)
		}
		return output{format: formatJSONPath, template: p}, nil
	}
	return output{}, usageErrorf("-o %q: want table, wide, json, yaml, name or jsonpath=TEMPLATE", o)
}

const none = "<none>"

// tableOpts are the optional columns of a table.
type tableOpts struct {
	showTenant bool // TENANT first (tenant-scoped kinds listed across tenants)
	wide       bool // -o wide: more columns for each kind
	labels     bool // --show-labels: LABELS last
	kindPrefix bool // NAME as kind/name (several kinds in one get)
}

// tableHeaders returns the table columns of a kind.
func tableHeaders(k apiv1.KindInfo, o tableOpts) []string {
	var h, wide []string
	switch k.Kind {
	case apiv1.KindTenant:
		h, wide = []string{"NAME", "AGE"}, []string{"DESCRIPTION"}
	case apiv1.KindHost:
		h, wide = []string{"NAME", "UNDERLAY-IP", "CAPACITY", "LIVENESS", "SINCE", "VIEW"}, []string{"HOST-ID", "AGENT", "REPLICA", "ERROR"}
	case apiv1.KindVPC:
		h, wide = []string{"NAME", "CIDRS", "VNI", "AGE"}, []string{"DEFAULT-POLICY"}
	case apiv1.KindSubnet:
		h, wide = []string{"NAME", "VPC", "CIDR", "GATEWAY"}, []string{"VNI"}
	case apiv1.KindEndpoint:
		h, wide = []string{"NAME", "SUBNET", "HOST", "IP", "MAC", "PHASE"}, []string{"READY", "QOS", "IDENTITY", "NETNS"}
	case apiv1.KindSecurityPolicy:
		h, wide = []string{"NAME", "SELECTOR", "INGRESS", "EGRESS"}, []string{"VPC"}
	case apiv1.KindQoSClass:
		h = []string{"NAME", "MIN", "MAX", "PRIO", "DSCP"}
	case apiv1.KindAppIntent:
		h, wide = []string{"NAME", "VPC", "SELECTOR", "OBJECTS", "UNMET"}, []string{"LATENCY"}
	default:
		h = []string{"NAME", "AGE"}
	}
	return decorate(k, o, h, wide, "TENANT", "LABELS")
}

// decorate adds the optional columns of o to a row or header: first the
// tenant, then the kind's own cells, the wide ones and the labels.
func decorate(k apiv1.KindInfo, o tableOpts, cells, wide []string, tenant, labels string) []string {
	if o.wide {
		cells = append(cells, wide...)
	}
	if o.labels {
		cells = append(cells, labels)
	}
	if o.showTenant && k.Namespaced {
		cells = append([]string{tenant}, cells...)
	}
	return cells
}

// tableRow returns the cells of obj for the columns of tableHeaders.
func tableRow(k apiv1.KindInfo, obj apiv1.Object, opts tableOpts, now time.Time) []string {
	m := obj.GetObjectMeta()
	var r, wide []string
	switch o := obj.(type) {
	case *apiv1.Host:
		view := "-"
		if o.Status.ViewVersion != 0 {
			view = strconv.FormatUint(o.Status.ViewVersion, 10)
		}
		r = []string{m.Name, orNone(o.Spec.UnderlayIP), orNone(string(o.Spec.Capacity)),
			orNone(o.Status.Liveness), age(o.Status.LastSeen, now, "<never>"), view}
		wide = []string{strconv.FormatUint(uint64(o.Status.HostID), 10), orNone(o.Status.AgentVersion), orNone(o.Status.Replica),
			orNone(cut(o.Status.LastError, 40))}
	case *apiv1.VPC:
		vni := "<pending>"
		if o.Status.VNI != 0 {
			vni = strconv.FormatUint(uint64(o.Status.VNI), 10)
		}
		r = []string{m.Name, orNone(strings.Join(o.Spec.CIDRs, ",")), vni, age(m.CreationTimestamp, now, "<unknown>")}
		wide = []string{first(o.Spec.DefaultPolicy, apiv1.DefaultPolicyAllow)}
	case *apiv1.Subnet:
		r = []string{m.Name, o.Spec.VPC, o.Spec.CIDR, orNone(o.Spec.Gateway)}
		wide = []string{strconv.FormatUint(uint64(o.Status.VNI), 10)}
	case *apiv1.Endpoint:
		r = []string{m.Name, o.Spec.Subnet, orNone(o.Spec.Host),
			first(o.Status.IP, o.Spec.IP, "<pending>"), first(o.Status.MAC, o.Spec.MAC, "<pending>"), orNone(o.Status.Phase)}
		ready := "<unknown>"
		if c := apiv1.FindCondition(o.Status.Conditions, apiv1.ConditionReady); c != nil {
			ready = c.Status
		}
		wide = []string{ready, orNone(o.Spec.QoSClass), strconv.FormatUint(uint64(o.Status.Identity), 10), orNone(o.Status.Netns)}
	case *apiv1.SecurityPolicy:
		r = []string{m.Name, formatSelector(o.Spec.Selector), strconv.Itoa(len(o.Spec.Ingress)), strconv.Itoa(len(o.Spec.Egress))}
		wide = []string{orNone(o.Spec.VPC)}
	case *apiv1.QoSClass:
		prio := none
		if o.Spec.Priority != nil {
			prio = strconv.Itoa(*o.Spec.Priority)
		}
		r = []string{m.Name, orNone(string(o.Spec.MinRate)), orNone(string(o.Spec.MaxRate)), prio, strconv.Itoa(o.Spec.DSCP)}
	case *apiv1.AppIntent:
		r = []string{m.Name, orNone(o.Spec.VPC), formatSelector(o.Spec.Selector),
			strconv.Itoa(len(o.Status.Objects)), strconv.Itoa(len(o.Status.Unmet))}
		wide = []string{first(o.Spec.Latency, apiv1.LatencyNormal)}
	case *apiv1.Tenant:
		r = []string{m.Name, age(m.CreationTimestamp, now, "<unknown>")}
		wide = []string{orNone(cut(o.Spec.Description, 40))}
	default: // any kind added later
		r = []string{m.Name, age(m.CreationTimestamp, now, "<unknown>")}
	}
	if opts.kindPrefix {
		r[0] = strings.ToLower(k.Kind) + "/" + r[0]
	}
	return decorate(k, opts, r, wide, m.Tenant, orNone(strings.Join(formatLabels(m.Labels), ",")))
}

// cut shortens s to at most n characters, marking a cut with "…".
func cut(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// writeTable prints rows under headers, aligned with a tabwriter.
func writeTable(w io.Writer, headers []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// streamTable prints rows one at a time (for watches), padding each column to
// the widest cell sized or printed so far, so that rows stay aligned unless a
// later cell is wider than every earlier one.
type streamTable struct {
	w      io.Writer
	widths []int
}

// size widens the columns to fit cells without printing them.
func (t *streamTable) size(cells []string) {
	for len(t.widths) < len(cells) {
		t.widths = append(t.widths, 0)
	}
	for i, c := range cells {
		t.widths[i] = max(t.widths[i], len(c))
	}
}

func (t *streamTable) row(cells []string) error {
	t.size(cells)
	var b strings.Builder
	for i, c := range cells {
		b.WriteString(c)
		if i < len(cells)-1 {
			b.WriteString(strings.Repeat(" ", t.widths[i]-len(c)+3))
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(t.w, b.String())
	return err
}

// marshalObject renders one object as indented JSON or as YAML, ending in a newline.
func marshalObject(o apiv1.Object, format string) ([]byte, error) {
	data, err := apiv1.Marshal(o, format) // indented JSON, or YAML
	if err != nil {
		return nil, err
	}
	return ensureNewline(data), nil
}

// listObject is the List object of `get -o json|yaml` without a NAME: the
// shape the REST API returns, with the list's resourceVersion (unlike
// apiv1.MarshalList, which writes YAML as one document per object).
type listObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		ResourceVersion string `json:"resourceVersion,omitempty"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

// newListObject returns objects as a List.
func newListObject(objs []apiv1.Object, resourceVersion string) *listObject {
	l := &listObject{APIVersion: apiv1.APIVersion, Kind: "List", Items: []json.RawMessage{}}
	l.Metadata.ResourceVersion = resourceVersion
	for _, o := range objs {
		data, _ := json.Marshal(o) // API objects always encode
		l.Items = append(l.Items, data)
	}
	return l
}

// marshalList renders objects as a List in JSON or YAML.
func marshalList(objs []apiv1.Object, resourceVersion, format string) ([]byte, error) {
	data, err := json.MarshalIndent(newListObject(objs, resourceVersion), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode list: %w", err)
	}
	if format == formatYAML {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return nil, fmt.Errorf("encode list as YAML: %w", err)
		}
	}
	return ensureNewline(data), nil
}

func ensureNewline(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	return b
}

// formatSelector writes a LabelSelector in the syntax -l accepts; the empty
// selector, which selects every endpoint of the tenant, is "<all>".
func formatSelector(sel apiv1.LabelSelector) string {
	if sel.Empty() {
		return "<all>"
	}
	return sel.String()
}

// formatLabels writes labels sorted by key as k=v pairs.
func formatLabels(labels map[string]string) []string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + labels[k]
	}
	return out
}

// age renders the time since an RFC 3339 timestamp the way kubectl does
// ("45s", "3m20s", "5h", "12d"); unset or unparsable gives missing.
func age(ts string, now time.Time, missing string) string {
	if ts == "" {
		return missing
	}
	t, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		return missing
	}
	return humanDuration(now.Sub(t))
}

func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 120:
		return fmt.Sprintf("%ds", s)
	case s < 10*60:
		if s%60 == 0 {
			return fmt.Sprintf("%dm", s/60)
		}
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 3*3600:
		return fmt.Sprintf("%dm", s/60)
	case s < 8*3600:
		if m := (s / 60) % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", s/3600, m)
		}
		return fmt.Sprintf("%dh", s/3600)
	case s < 48*3600:
		return fmt.Sprintf("%dh", s/3600)
	case s < 8*86400:
		if h := (s / 3600) % 24; h != 0 {
			return fmt.Sprintf("%dd%dh", s/86400, h)
		}
		return fmt.Sprintf("%dd", s/86400)
	case s < 2*365*86400:
		return fmt.Sprintf("%dd", s/86400)
	}
	return fmt.Sprintf("%dy", s/(365*86400))
}

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

// first returns the first non-empty string of vals (the last is the fallback).
func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
