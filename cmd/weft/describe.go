package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"github.com/weftnet/weft/controller/intent"
	"sigs.k8s.io/yaml"
)

func (a *app) newDescribeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "describe KIND NAME",
		Short: "Show one object in detail, with related objects",
		Long: `Show one object for humans: its metadata, labels, spec and status, and
related objects: a VPC's subnets, a subnet's number of endpoints, a host's
endpoints (across tenants), an AppIntent's needs, each with the object and
the rule that meet it.

KIND is a kind, plural or short name; tenant-scoped kinds need --tenant. For
scripts use 'weft get KIND NAME -o json' instead: this format may change.`,
		Example: `  weft describe vpc main --tenant acme
  weft describe host h1
  weft describe ep web-1 --tenant acme
  weft describe appintent shop --tenant acme`,
		Args:              exactArgs(2, "KIND NAME"),
		ValidArgsFunction: a.completeObjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			tenant, err := a.tenantFor(k)
			if err != nil {
				return err
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			o, err := cl.Get(cmd.Context(), k.Kind, tenant, args[1])
			if err != nil {
				return err
			}
			return a.describe(cmd.Context(), cl, o)
		},
	}
}

func (a *app) describe(ctx context.Context, cl *client.Client, o apiv1.Object) error {
	var b strings.Builder
	m := o.GetObjectMeta()
	field := func(name, value string) { fmt.Fprintf(&b, "%-17s %s\n", name+":", value) }
	field("Kind", o.GetTypeMeta().Kind)
	field("Name", m.Name)
	if m.Tenant != "" {
		field("Tenant", m.Tenant)
	}
	labels := formatLabels(m.Labels)
	if len(labels) == 0 {
		field("Labels", none)
	}
	for i, l := range labels {
		if i == 0 {
			field("Labels", l)
		} else {
			field("", l)
		}
	}
	created := orNone(m.CreationTimestamp)
	if m.CreationTimestamp != "" {
		created += " (" + age(m.CreationTimestamp, a.env.now(), "?") + " ago)"
	}
	field("Created", created)
	field("UID", orNone(m.UID))
	field("ResourceVersion", orNone(m.ResourceVersion))
	field("Generation", fmt.Sprint(m.Generation))
	for i, r := range m.OwnerReferences {
		name := ""
		if i == 0 {
			name = "Owners"
		}
		field(name, r.Kind+" "+r.Name+" ("+r.UID+")")
	}

	sections, err := specAndStatus(o)
	if err != nil {
		return err
	}
	for _, s := range sections {
		if s.body == "" {
			field(s.title, none)
			continue
		}
		fmt.Fprintf(&b, "%s:\n%s", s.title, indent(s.body, "  "))
	}
	relErr := a.describeRelated(ctx, cl, o, &b)
	if _, err := io.WriteString(a.stdout, b.String()); err != nil {
		return err
	}
	return relErr
}

type section struct{ title, body string }

// specAndStatus renders the spec and status of o as YAML.
func specAndStatus(o apiv1.Object) ([]section, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", apiv1.RefOf(o), err)
	}
	var parts map[string]json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil {
		return nil, fmt.Errorf("decode %s: %w", apiv1.RefOf(o), err)
	}
	var out []section
	for _, p := range []struct{ key, title string }{{"spec", "Spec"}, {"status", "Status"}} {
		raw, ok := parts[p.key]
		if !ok && p.key == "status" {
			continue // a kind without status
		}
		body := ""
		if s := strings.TrimSpace(string(raw)); ok && s != "{}" && s != "null" {
			y, err := yaml.JSONToYAML(raw)
			if err != nil {
				return nil, fmt.Errorf("encode %s %s: %w", apiv1.RefOf(o), p.key, err)
			}
			body = string(y)
		}
		out = append(out, section{p.title, body})
	}
	return out, nil
}

// describeRelated appends the objects related to o, listed by field
// selectors that the controller serves from its indexes.
func (a *app) describeRelated(ctx context.Context, cl *client.Client, o apiv1.Object, b *strings.Builder) error {
	m := o.GetObjectMeta()
	switch o := o.(type) {
	case *apiv1.VPC:
		subnets, _, err := cl.List(ctx, apiv1.KindSubnet, m.Tenant, "", client.WithFieldSelector("spec.vpc="+m.Name))
		if err != nil {
			fmt.Fprintf(b, "Subnets:          <unavailable>\n")
			return fmt.Errorf("list subnets of %s: %w", apiv1.RefOf(o), err)
		}
		var rows [][]string
		for _, s := range subnets {
			sn := s.(*apiv1.Subnet)
			rows = append(rows, []string{sn.Metadata.Name, sn.Spec.CIDR, orNone(sn.Spec.Gateway)})
		}
		writeRelated(b, "Subnets", []string{"NAME", "CIDR", "GATEWAY"}, rows)
	case *apiv1.Subnet:
		eps, _, err := cl.List(ctx, apiv1.KindEndpoint, m.Tenant, "", client.WithFieldSelector("spec.subnet="+m.Name))
		if err != nil {
			fmt.Fprintf(b, "Endpoints:        <unavailable>\n")
			return fmt.Errorf("list endpoints of %s: %w", apiv1.RefOf(o), err)
		}
		fmt.Fprintf(b, "%-17s %d\n", "Endpoints:", len(eps))
	case *apiv1.Host:
		eps, _, err := cl.List(ctx, apiv1.KindEndpoint, "", "", client.WithFieldSelector("spec.host="+m.Name))
		if err != nil {
			fmt.Fprintf(b, "Endpoints:        <unavailable>\n")
			return fmt.Errorf("list endpoints of %s: %w", apiv1.RefOf(o), err)
		}
		var rows [][]string
		for _, e := range eps {
			ep := e.(*apiv1.Endpoint)
			rows = append(rows, []string{ep.Metadata.Tenant, ep.Metadata.Name, ep.Spec.Subnet,
				first(ep.Status.IP, ep.Spec.IP, "<pending>"), orNone(ep.Status.Phase)})
		}
		writeRelated(b, "Endpoints", []string{"TENANT", "NAME", "SUBNET", "IP", "PHASE"}, rows)
	case *apiv1.AppIntent:
		var rows [][]string
		for _, m := range intent.Explain(o) {
			rows = append(rows, []string{m.Need, m.Object, m.Rule})
		}
		writeRelated(b, "Needs", []string{"NEED", "OBJECT", "RULE"}, rows)
	}
	return nil
}

// writeRelated appends an indented table, or <none>.
func writeRelated(b *strings.Builder, title string, headers []string, rows [][]string) {
	if len(rows) == 0 {
		fmt.Fprintf(b, "%-17s %s\n", title+":", none)
		return
	}
	var t strings.Builder
	_ = writeTable(&t, headers, rows) // a strings.Builder does not fail
	fmt.Fprintf(b, "%s (%d):\n%s", title, len(rows), indent(t.String(), "  "))
}

// indent prefixes every non-empty line of s.
func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			b.WriteString(prefix)
		}
		b.WriteString(l)
	}
	return b.String()
}
