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
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

func checkFormat(f string) error {
	switch f {
	case formatTable, formatJSON, formatYAML:
		return nil
	}
	return usageErrorf("-o %q: want table, json or yaml", f)
}

const none = "<none>"

// tableHeaders returns the table columns of a kind; showTenant adds a
// TENANT column first (for tenant-scoped kinds listed across tenants).
func tableHeaders(k apiv1.KindInfo, showTenant bool) []string {
	var h []string
	switch k.Kind {
	case apiv1.KindTenant:
		h = []string{"NAME", "AGE"}
	case apiv1.KindHost:
		h = []string{"NAME", "UNDERLAY-IP", "CAPACITY", "LIVENESS", "SINCE", "VIEW"}
	case apiv1.KindVPC:
		h = []string{"NAME", "CIDRS", "VNI", "AGE"}
	case apiv1.KindSubnet:
		h = []string{"NAME", "VPC", "CIDR", "GATEWAY"}
	case apiv1.KindEndpoint:
		h = []string{"NAME", "SUBNET", "HOST", "IP", "MAC", "PHASE"}
	case apiv1.KindSecurityPolicy:
		h = []string{"NAME", "SELECTOR", "INGRESS", "EGRESS"}
	case apiv1.KindQoSClass:
		h = []string{"NAME", "MIN", "MAX", "PRIO", "DSCP"}
	case apiv1.KindAppIntent:
		h = []string{"NAME", "VPC", "SELECTOR", "OBJECTS", "UNMET"}
	default:
		h = []string{"NAME", "AGE"}
	}
	if showTenant && k.Namespaced {
		h = append([]string{"TENANT"}, h...)
	}
	return h
}

// tableRow returns the cells of o for the columns of tableHeaders.
func tableRow(k apiv1.KindInfo, o apiv1.Object, showTenant bool, now time.Time) []string {
	m := o.GetObjectMeta()
	var r []string
	switch o := o.(type) {
	case *apiv1.Host:
		view := "-"
		if o.Status.ViewVersion != 0 {
			view = strconv.FormatUint(o.Status.ViewVersion, 10)
		}
		r = []string{m.Name, orNone(o.Spec.UnderlayIP), orNone(string(o.Spec.Capacity)),
			orNone(o.Status.Liveness), age(o.Status.LastSeen, now, "<never>"), view}
	case *apiv1.VPC:
		vni := "<pending>"
		if o.Status.VNI != 0 {
			vni = strconv.FormatUint(uint64(o.Status.VNI), 10)
		}
		r = []string{m.Name, orNone(strings.Join(o.Spec.CIDRs, ",")), vni, age(m.CreationTimestamp, now, "<unknown>")}
	case *apiv1.Subnet:
		r = []string{m.Name, o.Spec.VPC, o.Spec.CIDR, orNone(o.Spec.Gateway)}
	case *apiv1.Endpoint:
		r = []string{m.Name, o.Spec.Subnet, orNone(o.Spec.Host),
			first(o.Status.IP, o.Spec.IP, "<pending>"), first(o.Status.MAC, o.Spec.MAC, "<pending>"), orNone(o.Status.Phase)}
	case *apiv1.SecurityPolicy:
		r = []string{m.Name, formatSelector(o.Spec.Selector), strconv.Itoa(len(o.Spec.Ingress)), strconv.Itoa(len(o.Spec.Egress))}
	case *apiv1.QoSClass:
		prio := none
		if o.Spec.Priority != nil {
			prio = strconv.Itoa(*o.Spec.Priority)
		}
		r = []string{m.Name, orNone(string(o.Spec.MinRate)), orNone(string(o.Spec.MaxRate)), prio, strconv.Itoa(o.Spec.DSCP)}
	case *apiv1.AppIntent:
		r = []string{m.Name, orNone(o.Spec.VPC), formatSelector(o.Spec.Selector),
			strconv.Itoa(len(o.Status.Objects)), strconv.Itoa(len(o.Status.Unmet))}
	default: // Tenant, and any kind added later
		r = []string{m.Name, age(m.CreationTimestamp, now, "<unknown>")}
	}
	if showTenant && k.Namespaced {
		r = append([]string{m.Tenant}, r...)
	}
	return r
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

// marshalList renders objects as a List in JSON or YAML.
func marshalList(objs []apiv1.Object, resourceVersion, format string) ([]byte, error) {
	l := listObject{APIVersion: apiv1.APIVersion, Kind: "List", Items: []json.RawMessage{}}
	l.Metadata.ResourceVersion = resourceVersion
	for _, o := range objs {
		data, err := apiv1.Marshal(o, formatJSON)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", apiv1.RefOf(o), err)
		}
		l.Items = append(l.Items, data)
	}
	data, err := json.MarshalIndent(l, "", "  ")
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
