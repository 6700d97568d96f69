package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"sigs.k8s.io/yaml"
)

func (a *app) newGetCmd() *cobra.Command {
	var (
		output, selector string
		watch            bool
	)
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List objects of a kind, or show one",
		Long: `List the objects of a kind, or show the object NAME.

KIND is a kind, plural or short name: tenant, host, vpc, subnet (sn),
endpoint (ep), securitypolicy (policy, sp), qosclass (qos).

Without NAME, a tenant-scoped kind is listed in --tenant if given, else across
all tenants (as with --all-tenants), with a TENANT column. With NAME,
--tenant is required for tenant-scoped kinds.

-o table (default) prints one row per object; -o json and -o yaml print the
object, or a List object ({"kind":"List","items":[...]}) without NAME.
-l filters by labels: "app=web", "app!=web", "tier in (a,b)", "tier notin (c)",
"gpu", "!gpu", comma-separated requirements must all hold.
-w prints the current objects and then every change (with an EVENT column,
or one {"type":..., "object":...} JSON line per change with -o json) until
interrupted.`,
		Example: `  # Endpoints of tenant acme
  weft get endpoints --tenant acme

  # Every VPC of every tenant
  weft get vpcs --all-tenants

  # One subnet as YAML
  weft get subnet a --tenant acme -o yaml

  # Hosts, then follow their liveness
  weft get hosts -w

  # Web endpoints as a JSON List
  weft get ep -l app=web -o json`,
		Args: rangeArgs(1, 2, "KIND [NAME]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			if err := checkFormat(output); err != nil {
				return err
			}
			if selector != "" {
				if _, err := apiv1.ParseSelector(selector); err != nil {
					return usageErrorf("-l: %v", err)
				}
			}
			q := getQuery{kind: k, format: output, selector: selector}
			if len(args) == 2 {
				if q.name = args[1]; q.name == "" {
					return usageErrorf("empty NAME")
				}
				if selector != "" {
					return usageErrorf("-l cannot be used with a NAME")
				}
				if a.allTenants && k.Namespaced {
					return usageErrorf("--all-tenants cannot be used with a NAME: pass --tenant")
				}
				if q.tenant, err = a.tenantFor(k); err != nil {
					return err
				}
			} else {
				q.tenant = a.listTenant(k)
				q.showTenant = k.Namespaced && q.tenant == ""
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			if watch {
				return a.watch(cmd.Context(), cl, q)
			}
			return a.get(cmd.Context(), cl, q)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", formatTable, "output format: table, json or yaml")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector, e.g. 'app=web,tier in (a,b)'")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "after the current objects, print every change until interrupted")
	cmd.Flags().IntVar(&a.pageSize, "chunk-size", 500, "list in pages of this many objects (0: the controller's page size)")
	return cmd
}

// getQuery is what one `weft get` asks for.
type getQuery struct {
	kind       apiv1.KindInfo
	tenant     string // "" lists across tenants
	name       string // "" lists
	selector   string
	format     string
	showTenant bool
}

func (a *app) get(ctx context.Context, cl *client.Client, q getQuery) error {
	now := a.env.now()
	if q.name != "" {
		o, err := cl.Get(ctx, q.kind.Kind, q.tenant, q.name)
		if err != nil {
			return err
		}
		if q.format == formatTable {
			return writeTable(a.stdout, tableHeaders(q.kind, false), [][]string{tableRow(q.kind, o, false, now)})
		}
		data, err := marshalObject(o, q.format)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(data)
		return err
	}
	objs, rv, err := cl.List(ctx, q.kind.Kind, q.tenant, q.selector)
	if err != nil {
		return err
	}
	if q.format != formatTable {
		data, err := marshalList(objs, rv, q.format)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(data)
		return err
	}
	if len(objs) == 0 {
		where := ""
		if q.tenant != "" {
			where = " in tenant " + q.tenant
		}
		fmt.Fprintf(a.stderr, "No %s found%s.\n", q.kind.Plural, where)
		return nil
	}
	rows := make([][]string, len(objs))
	for i, o := range objs {
		rows[i] = tableRow(q.kind, o, q.showTenant, now)
	}
	return writeTable(a.stdout, tableHeaders(q.kind, q.showTenant), rows)
}

// watch prints the current objects and then every change until ctx ends
// (exit 0) or the controller ends the stream or reports an error (exit 1).
// The current objects come from a List, so that the table's columns can be
// sized to them, and the watch starts at the list's resourceVersion, so that
// no change is missed or repeated.
func (a *app) watch(ctx context.Context, cl *client.Client, q getQuery) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objs, rv, err := cl.List(ctx, q.kind.Kind, q.tenant, q.selector)
	if err != nil {
		return err
	}
	var current []client.WatchEvent
	for _, o := range objs {
		if q.name == "" || o.GetObjectMeta().Name == q.name {
			current = append(current, client.WatchEvent{Type: client.Added, Object: o})
		}
	}
	events, err := cl.Watch(ctx, q.kind.Kind, q.tenant, q.selector, rv)
	if err != nil {
		return err
	}
	table := &streamTable{w: a.stdout}
	row := func(ev client.WatchEvent) []string {
		return append([]string{ev.Type}, tableRow(q.kind, ev.Object, q.showTenant, a.env.now())...)
	}
	print := func(ev client.WatchEvent) error {
		if q.format == formatTable {
			return table.row(row(ev))
		}
		return a.writeEvent(ev, q.format)
	}
	if q.format == formatTable {
		header := append([]string{"EVENT"}, tableHeaders(q.kind, q.showTenant)...)
		table.size(header)
		table.size([]string{client.Modified}) // the widest event type
		for _, ev := range current {
			table.size(row(ev))
		}
		if err := table.row(header); err != nil {
			return err
		}
	}
	for _, ev := range current {
		if err := print(ev); err != nil {
			return err
		}
	}
	for ev := range events {
		if ev.Type == client.Error {
			return fmt.Errorf("watch %s: %w", q.kind.Plural, ev.Err)
		}
		if q.name != "" && ev.Object.GetObjectMeta().Name != q.name {
			continue
		}
		if err := print(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to stop a watch
	}
	return errors.New("the controller ended the watch")
}

// writeEvent prints one watch event as a JSON line or a YAML document.
func (a *app) writeEvent(ev client.WatchEvent, format string) error {
	obj, err := apiv1.Marshal(ev.Object, formatJSON)
	if err != nil {
		return fmt.Errorf("encode %s: %w", apiv1.RefOf(ev.Object), err)
	}
	data, err := json.Marshal(struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}{ev.Type, obj})
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if format == formatYAML {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		data = append([]byte("---\n"), data...)
	}
	_, err = a.stdout.Write([]byte(strings.TrimRight(string(data), "\n") + "\n"))
	return err
}
