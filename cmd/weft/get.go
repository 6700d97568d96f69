package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
	"sigs.k8s.io/yaml"
)

func (a *app) newGetCmd() *cobra.Command {
	var (
		outFlag, selector, fields, sortBy string
		watch, showLabels                 bool
	)
	cmd := &cobra.Command{
		Use:   "get KIND[,KIND...] [NAME...] | KIND/NAME...",
		Short: "List objects of some kinds, or show some objects",
		Long: `List the objects of one or more kinds, or show the objects named.

KIND is a kind, plural or short name: tenant, host, vpc, subnet (sn),
endpoint (ep), securitypolicy (policy, sp), qosclass (qos), appintent (intent);
several kinds are separated by commas (vpcs,subnets). Objects are named by
NAMEs after the kind(s), or each as KIND/NAME.

Without NAMEs, a tenant-scoped kind is listed in the tenant of -n/--tenant,
$WEFT_TENANT or the current context, else across all tenants (as with
-A/--all-tenants), with a TENANT column. NAMEs need a tenant for
tenant-scoped kinds.

-o table (default) prints one row per object (a table per kind), -o wide
more columns, -o name kind/name lines; -o json and -o yaml print the
object, or a List object ({"kind":"List","items":[...]}) of several;
-o jsonpath=TEMPLATE prints a template (a subset of kubectl's: .field,
['key'], [n], [*], [?(@.path=="value")], "literals", {range ...}{end}) of
that object or List.
--show-labels adds a LABELS column; --sort-by=PATH sorts the rows of each
kind by a jsonpath of the objects (.metadata.name, .status.ip).
-l filters by labels: "app=web", "app!=web", "tier in (a,b)", "tier notin (c)",
"gpu", "!gpu", comma-separated requirements must all hold.
--field-selector filters by fields: "spec.host=h1,status.phase!=Ready"
(metadata.name and metadata.tenant of every kind; an endpoint's spec.host,
spec.subnet and status.phase; a subnet's spec.vpc).
-w prints the current objects of one kind and then every change (with an
EVENT column, or one {"type":..., "object":...} JSON line per change with
-o json) until interrupted.`,
		Example: `  # Endpoints of tenant acme
  weft get endpoints -n acme

  # Every VPC and subnet of every tenant
  weft get vpcs,subnets -A

  # Two endpoints, with their labels
  weft get ep web-1 db-1 -n acme --show-labels

  # One subnet as YAML
  weft get subnet/a -n acme -o yaml

  # The endpoints on host h1 that are not Ready, wide
  weft get ep -A --field-selector spec.host=h1,status.phase!=Ready -o wide

  # Names and addresses
  weft get ep -n acme -o jsonpath='{range .items[*]}{.metadata.name}{"\t"}{.status.ip}{"\n"}{end}'

  # Hosts, then follow their liveness
  weft get hosts -w`,
		Args:              minArgs(1, "KIND[,KIND...] [NAME...] or KIND/NAME..."),
		ValidArgsFunction: a.completeObjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			targets, err := parseTargets(args)
			if err != nil {
				return err
			}
			out, err := parseOutput(outFlag)
			if err != nil {
				return err
			}
			q := getQuery{targets: targets, out: out, selector: selector, fields: fields, tenant: a.tenant,
				opts: tableOpts{wide: out.format == formatWide, labels: showLabels, kindPrefix: len(targets) > 1}}
			if sortBy != "" {
				if q.sortBy, err = parseJSONPath(sortBy); err != nil {
					return usageErrorf("--sort-by: %v", err)
				}
			}
			if selector != "" {
				if _, err := apiv1.ParseSelector(selector); err != nil {
					return usageErrorf("-l: %v", err)
				}
			}
			if err := fieldSelectorFor(targets, fields); err != nil {
				return err
			}
			if named(targets) {
				if selector != "" || fields != "" {
					return usageErrorf("-l and --field-selector cannot be used with NAMEs")
				}
				for _, t := range targets {
					if a.allTenants && t.kind.Namespaced {
						return usageErrorf("--all-tenants cannot be used with a NAME: pass --tenant")
					}
					if _, err := a.tenantFor(t.kind); err != nil {
						return err
					}
				}
			}
			if watch && (len(targets) != 1 || out.format == formatName || out.format == formatJSONPath) {
				return usageErrorf("-w takes one kind, and -o table, wide, json or yaml")
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
	cmd.Flags().StringVarP(&outFlag, "output", "o", formatTable, "output format: table, wide, json, yaml, name or jsonpath=TEMPLATE")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector, e.g. 'app=web,tier in (a,b)'")
	cmd.Flags().StringVar(&fields, "field-selector", "", "field selector, e.g. 'spec.host=h1,status.phase!=Ready'")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "after the current objects, print every change until interrupted")
	cmd.Flags().BoolVar(&showLabels, "show-labels", false, "add a LABELS column to tables")
	cmd.Flags().StringVar(&sortBy, "sort-by", "", "sort the rows of each kind by a jsonpath of the objects, e.g. .metadata.creationTimestamp")
	cmd.Flags().IntVar(&a.pageSize, "chunk-size", 500, "list in pages of this many objects (0: the controller's page size)")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{formatTable, formatWide, formatJSON, formatYAML, formatName, formatJSONPath}, cobra.ShellCompDirectiveNoFileComp|cobra.ShellCompDirectiveNoSpace))
	return cmd
}

// getQuery is what one `weft get` asks for.
type getQuery struct {
	targets          []target
	tenant           string // of NAMEs of tenant-scoped kinds
	selector, fields string
	out              output
	sortBy           *jsonPath
	opts             tableOpts
}

// found is what get found of one target.
type found struct {
	kind apiv1.KindInfo
	objs []apiv1.Object
	rv   string // of a list
	// tenant is the tenant listed ("" all); showTenant: with a TENANT column.
	tenant     string
	showTenant bool
}

func (a *app) get(ctx context.Context, cl *client.Client, q getQuery) error {
	var (
		results []found
		errs    []error
	)
	for _, t := range q.targets {
		f := found{kind: t.kind}
		if len(t.names) == 0 {
			f.tenant = a.listTenant(t.kind)
			f.showTenant = t.kind.Namespaced && f.tenant == ""
			objs, rv, err := cl.List(ctx, t.kind.Kind, f.tenant, q.selector, client.WithFieldSelector(q.fields))
			if err != nil {
				return err
			}
			f.objs, f.rv = objs, rv
		}
		for _, name := range t.names {
			tenant, _ := a.tenantFor(t.kind) // checked by RunE
			o, err := cl.Get(ctx, t.kind.Kind, tenant, name)
			if err != nil {
				if !apiv1.IsNotFound(err) || len(q.targets) == 1 && len(t.names) == 1 {
					return err
				}
				errs = append(errs, err) // the others are still shown
				continue
			}
			f.objs = append(f.objs, o)
		}
		if q.sortBy != nil {
			if err := sortObjects(f.objs, q.sortBy); err != nil {
				return err
			}
		}
		results = append(results, f)
	}
	if err := a.printFound(results, q); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// printFound prints what get found in the format of -o.
func (a *app) printFound(results []found, q getQuery) error {
	var all []apiv1.Object
	for _, f := range results {
		all = append(all, f.objs...)
	}
	single := len(q.targets) == 1 && len(q.targets[0].names) == 1 && len(all) == 1
	switch q.out.format {
	case formatName:
		for _, o := range all {
			fmt.Fprintln(a.stdout, refString(o))
		}
		return nil
	case formatJSON, formatYAML, formatJSONPath:
		rv := ""
		if len(results) == 1 {
			rv = results[0].rv
		}
		if q.out.format != formatJSONPath {
			data, err := marshalList(all, rv, q.out.format)
			if single {
				data, err = marshalObject(all[0], q.out.format)
			}
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(data)
			return err
		}
		var v any = newListObject(all, rv)
		if single {
			v = all[0]
		}
		doc, err := toJSONValue(v)
		if err != nil {
			return err
		}
		text, err := q.out.template.execute(doc)
		if err != nil {
			return err
		}
		_, err = io.WriteString(a.stdout, text)
		return err
	}
	if len(all) == 0 && !named(q.targets) {
		where, what := "", "resources"
		if len(results) == 1 {
			what = results[0].kind.Plural
			if t := results[0].tenant; t != "" {
				where = " in tenant " + t
			}
		}
		fmt.Fprintf(a.stderr, "No %s found%s.\n", what, where)
		return nil
	}
	now, printed := a.env.now(), false
	for _, f := range results {
		if len(f.objs) == 0 {
			continue
		}
		if printed {
			fmt.Fprintln(a.stdout)
		}
		printed = true
		opts := q.opts
		opts.showTenant = f.showTenant
		rows := make([][]string, len(f.objs))
		for i, o := range f.objs {
			rows[i] = tableRow(f.kind, o, opts, now)
		}
		if err := writeTable(a.stdout, tableHeaders(f.kind, opts), rows); err != nil {
			return err
		}
	}
	return nil
}

// sortObjects sorts objs stably by the value path gives each: numbers by
// value, before strings; objects without it first.
func sortObjects(objs []apiv1.Object, path *jsonPath) error {
	keys := make(map[apiv1.Object]string, len(objs))
	for _, o := range objs {
		doc, err := toJSONValue(o)
		if err != nil {
			return err
		}
		if keys[o], err = path.execute(doc); err != nil {
			return fmt.Errorf("--sort-by: %w", err)
		}
	}
	slices.SortStableFunc(objs, func(x, y apiv1.Object) int {
		a, b := keys[x], keys[y]
		fa, erra := strconv.ParseFloat(a, 64)
		fb, errb := strconv.ParseFloat(b, 64)
		switch {
		case erra == nil && errb == nil:
			return cmp.Compare(fa, fb)
		case erra == nil && b != "":
			return -1
		case errb == nil && a != "":
			return 1
		}
		return strings.Compare(a, b)
	})
	return nil
}

// watch prints the current objects and then every change until ctx ends
// (exit 0) or the controller ends the stream or reports an error (exit 1).
// The current objects come from a List, so that the table's columns can be
// sized to them, and the watch starts at the list's resourceVersion, so that
// no change is missed or repeated.
func (a *app) watch(ctx context.Context, cl *client.Client, q getQuery) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := q.targets[0]
	tenant, fields := a.listTenant(t.kind), q.fields
	if len(t.names) > 0 {
		tenant, _ = a.tenantFor(t.kind) // checked by RunE
	}
	if len(t.names) == 1 {
		fields = "metadata.name=" + t.names[0]
	}
	wanted := func(o apiv1.Object) bool {
		return len(t.names) == 0 || slices.Contains(t.names, o.GetObjectMeta().Name)
	}
	objs, rv, err := cl.List(ctx, t.kind.Kind, tenant, q.selector, client.WithFieldSelector(fields))
	if err != nil {
		return err
	}
	if q.sortBy != nil {
		if err := sortObjects(objs, q.sortBy); err != nil {
			return err
		}
	}
	var current []client.WatchEvent
	for _, o := range objs {
		if wanted(o) {
			current = append(current, client.WatchEvent{Type: client.Added, Object: o})
		}
	}
	events, err := cl.Watch(ctx, t.kind.Kind, tenant, q.selector, rv, client.WithFieldSelector(fields))
	if err != nil {
		return err
	}
	opts := q.opts
	opts.showTenant = t.kind.Namespaced && tenant == ""
	table := &streamTable{w: a.stdout}
	row := func(ev client.WatchEvent) []string {
		return append([]string{ev.Type}, tableRow(t.kind, ev.Object, opts, a.env.now())...)
	}
	tabular := q.out.format == formatTable || q.out.format == formatWide
	print := func(ev client.WatchEvent) error {
		if tabular {
			return table.row(row(ev))
		}
		return a.writeEvent(ev, q.out.format)
	}
	if tabular {
		header := append([]string{"EVENT"}, tableHeaders(t.kind, opts)...)
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
			return fmt.Errorf("watch %s: %w", t.kind.Plural, ev.Err)
		}
		if !wanted(ev.Object) {
			continue
		}
		if err := print(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to stop a watch
	}
	return fmt.Errorf("watch %s: the controller ended the watch", t.kind.Plural)
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
