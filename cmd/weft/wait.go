package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func (a *app) newWaitCmd() *cobra.Command {
	var (
		forFlag, selector, fields string
		timeout                   time.Duration
		all                       bool
	)
	cmd := &cobra.Command{
		Use:   "wait --for=condition=TYPE[=STATUS]|delete (KIND NAME... | KIND/NAME... | KIND -l SELECTOR | KIND --all)",
		Short: "Wait until objects have a condition, or are deleted",
		Long: `Wait until each object named (or selected by -l and --field-selector, or every
object of KIND with --all) has a condition, or is deleted. It reads the
objects, then follows their changes on a watch: it does not poll.

--for=condition=TYPE waits for the condition TYPE to be True (another status
with condition=TYPE=STATUS) for the object's current generation: a
condition whose observedGeneration is older than metadata.generation does
not count. Endpoints have Ready (their phase is Ready and their policy and
QoS are programmed), PolicyProgrammed and QoSProgrammed; hosts have Alive
and ViewApplied.
--for=delete waits until the objects no longer exist.

One line per object once it meets the condition:

  endpoint/web-1 condition met
  endpoint/db-1 deleted

After --timeout (default 30s) it fails, naming the objects still waited for.`,
		Example: `  weft wait --for=condition=Ready endpoint/web-1 -n acme --timeout 30s
  weft wait --for=condition=Ready ep -n acme -l app=web
  weft wait --for=condition=Alive=False host h3
  weft wait --for=delete endpoint/web-1 endpoint/web-2 -n acme`,
		Args:              minArgs(1, "KIND NAME..., KIND/NAME... or KIND with -l or --all"),
		ValidArgsFunction: a.completeObjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			cond, err := parseWaitFor(forFlag)
			if err != nil {
				return err
			}
			targets, err := selectTargets(args, selector, fields, all)
			if err != nil {
				return err
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			for _, t := range targets {
				w := waiter{app: a, cl: cl, kind: t.kind, cond: cond, selector: selector, fields: fields, tenant: a.listTenant(t.kind)}
				if len(t.names) > 0 {
					if w.tenant, err = a.tenantFor(t.kind); err != nil {
						return err
					}
				}
				if err := w.wait(ctx, t.names); err != nil {
					if errors.Is(err, context.DeadlineExceeded) && cmd.Context().Err() == nil {
						return fmt.Errorf("timed out after %s waiting for %s: %w", timeout, strings.Join(w.pending(), ", "), err)
					}
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&forFlag, "for", "", "condition=TYPE[=STATUS] or delete")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "wait for the objects of KIND with these labels")
	cmd.Flags().StringVar(&fields, "field-selector", "", "wait for the objects of KIND with these fields")
	cmd.Flags().BoolVar(&all, "all", false, "wait for every object of KIND (in the tenant, or all with -A)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait")
	_ = cmd.MarkFlagRequired("for")
	_ = cmd.RegisterFlagCompletionFunc("for", cobra.FixedCompletions([]string{"condition=" + apiv1.ConditionReady, "delete"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// waitCondition is a parsed --for.
type waitCondition struct {
	deleted     bool   // --for=delete
	typ, status string // --for=condition=TYPE[=STATUS]
	description string // what is printed once met
}

func parseWaitFor(s string) (waitCondition, error) {
	if s == "delete" {
		return waitCondition{deleted: true, description: "deleted"}, nil
	}
	rest, ok := strings.CutPrefix(s, "condition=")
	if !ok || rest == "" {
		return waitCondition{}, usageErrorf("--for %q: want condition=TYPE[=STATUS] or delete", s)
	}
	typ, status, _ := strings.Cut(rest, "=")
	switch strings.ToLower(status) {
	case "", "true":
		status = apiv1.ConditionTrue
	case "false":
		status = apiv1.ConditionFalse
	case "unknown":
		status = apiv1.ConditionUnknown
	default:
		return waitCondition{}, usageErrorf("--for %q: the status is True, False or Unknown", s)
	}
	return waitCondition{typ: typ, status: status, description: "condition met"}, nil
}

// met reports whether o meets c (not for delete).
func (c waitCondition) met(o apiv1.Object) bool {
	var conds []apiv1.Condition
	switch o := o.(type) {
	case *apiv1.Endpoint:
		conds = o.Status.Conditions
	case *apiv1.Host:
		conds = o.Status.Conditions
	}
	got := apiv1.FindCondition(conds, c.typ)
	return got != nil && got.Status == c.status && got.ObservedGeneration >= o.GetObjectMeta().Generation
}

// waiter waits for the objects of one kind.
type waiter struct {
	*app
	cl               *client.Client
	kind             apiv1.KindInfo
	cond             waitCondition
	selector, fields string
	tenant           string
	waiting          map[string]bool // by tenant/name: not met yet
}

func key(o apiv1.Object) string {
	m := o.GetObjectMeta()
	return m.Tenant + "/" + m.Name
}

// pending names the objects still waited for.
func (w *waiter) pending() []string {
	var out []string
	for k := range w.waiting {
		_, name, _ := strings.Cut(k, "/")
		out = append(out, strings.ToLower(w.kind.Kind)+"/"+name)
	}
	slices.Sort(out)
	return out
}

// wait lists the objects (names, or those the selectors select), then
// follows a watch from that list until each meets the condition or ctx
// ends. A watch the controller ends is opened again from a new list.
func (w *waiter) wait(ctx context.Context, names []string) error {
	fields := w.fields
	if len(names) == 1 {
		fields = "metadata.name=" + names[0]
	}
	wanted := func(o apiv1.Object) bool {
		return len(names) == 0 || slices.Contains(names, o.GetObjectMeta().Name)
	}
	first := true
	for {
		objs, rv, err := w.cl.List(ctx, w.kind.Kind, w.tenant, w.selector, client.WithFieldSelector(fields))
		if err != nil {
			return err
		}
		if first {
			w.waiting = map[string]bool{}
			if err := w.start(objs, names); err != nil {
				return err
			}
			first = false
		} else if err := w.relist(objs); err != nil {
			return err
		}
		if len(w.waiting) == 0 {
			return nil
		}
		events, err := w.cl.Watch(ctx, w.kind.Kind, w.tenant, w.selector, rv, client.WithFieldSelector(fields))
		if err != nil {
			return err
		}
		for ev := range events {
			if ev.Type == client.Error {
				if apiv1.ReasonOf(ev.Err) != apiv1.ReasonGone {
					return fmt.Errorf("watch %s: %w", w.kind.Plural, ev.Err)
				}
				break // list again
			}
			if k := key(ev.Object); wanted(ev.Object) && w.waiting[k] {
				if err := w.observe(ev.Type == client.Deleted, ev.Object); err != nil {
					return err
				}
			}
			if len(w.waiting) == 0 {
				return nil
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// start takes the objects to wait for from the first list.
func (w *waiter) start(objs []apiv1.Object, names []string) error {
	found := map[string]bool{}
	for _, o := range objs {
		if len(names) > 0 && !slices.Contains(names, o.GetObjectMeta().Name) {
			continue
		}
		found[o.GetObjectMeta().Name] = true
		w.waiting[key(o)] = true
		if err := w.observe(false, o); err != nil {
			return err
		}
	}
	for _, n := range names {
		switch {
		case found[n]:
		case w.cond.deleted:
			fmt.Fprintf(w.stdout, "%s/%s %s\n", strings.ToLower(w.kind.Kind), n, w.cond.description)
		default:
			return apiv1.NewNotFound(apiv1.Ref{Kind: w.kind.Kind, Tenant: w.tenant, Name: n})
		}
	}
	if len(names) == 0 && len(objs) == 0 {
		return fmt.Errorf("no %s selected to wait for", w.kind.Plural)
	}
	return nil
}

// relist brings the objects waited for in line with a new list.
func (w *waiter) relist(objs []apiv1.Object) error {
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[key(o)] = true; w.waiting[key(o)] {
			if err := w.observe(false, o); err != nil {
				return err
			}
		}
	}
	for k := range w.waiting {
		if !seen[k] { // deleted meanwhile
			gone := w.kind.New()
			m := gone.GetObjectMeta()
			m.Tenant, m.Name, _ = strings.Cut(k, "/")
			if err := w.observe(true, gone); err != nil {
				return err
			}
		}
	}
	return nil
}

// observe applies the state of an object waited for.
func (w *waiter) observe(deleted bool, o apiv1.Object) error {
	switch {
	case deleted && !w.cond.deleted:
		return fmt.Errorf("%s was deleted while waiting for its condition %s", refString(o), w.cond.typ)
	case deleted || !w.cond.deleted && w.cond.met(o):
		delete(w.waiting, key(o))
		fmt.Fprintf(w.stdout, "%s %s\n", refString(o), w.cond.description)
	}
	return nil
}
