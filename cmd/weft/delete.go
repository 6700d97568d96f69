package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func (a *app) newDeleteCmd() *cobra.Command {
	var (
		files                  []string
		selector, fields       string
		dryRun                 string
		ignoreNotFound, allObj bool
	)
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME... | KIND/NAME... | KIND (-l SELECTOR | --all) | -f FILE|DIR|- ...)",
		Short: "Delete objects by name, by selector, or those described in files",
		Long: `Delete the objects NAME of KIND (or each KIND/NAME), the objects of KIND that
-l (labels) and --field-selector select, every object of KIND with --all, or
every object named in the files given with -f (the same inputs as apply:
files, directories, - for stdin).

Objects from files are deleted in reverse dependency order (endpoints first,
tenants last) so that nothing is deleted while something still refers to it.
One line per object:

  endpoint/acme/web-1 deleted

An object that does not exist is reported as "not found" and makes the exit
code 1, unless --ignore-not-found. The controller refuses to delete an object
that others depend on and names them; the remaining objects are still
deleted and the exit code is 1. --dry-run=server only asks the controller
whether each delete would succeed.`,
		Example: `  weft delete endpoint web-1 web-2 -n acme
  weft delete host/h3
  weft delete ep -n acme -l app=web
  weft delete -f network.yaml
  weft delete -f network.yaml --ignore-not-found`,
		ValidArgsFunction: a.completeObjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, suffix, err := dryRunOptions(dryRun)
			if err != nil {
				return err
			}
			switch {
			case len(files) > 0 && len(args) > 0:
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("give either KIND NAME or -f, not both")}
			case len(files) > 0:
				docs, err := a.readObjects(files, cmd.Flags().Changed("tenant"))
				if err != nil {
					return err
				}
				c, err := a.client()
				if err != nil {
					return err
				}
				sortByDependency(docs, true)
				refs := make([]apiv1.Ref, len(docs))
				for i, d := range docs {
					refs[i] = apiv1.RefOf(d.Object)
				}
				return a.deleteRefs(cmd, c, refs, ignoreNotFound, opts, suffix)
			case len(args) == 0:
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("want KIND NAME, KIND/NAME, KIND -l SELECTOR or -f FILE")}
			}
			targets, err := selectTargets(args, selector, fields, allObj)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			var refs []apiv1.Ref
			for _, t := range targets {
				for _, name := range t.names {
					tenant, err := a.tenantFor(t.kind)
					if err != nil {
						return err
					}
					refs = append(refs, apiv1.Ref{Kind: t.kind.Kind, Tenant: tenant, Name: name})
				}
				if len(t.names) == 0 {
					objs, _, err := c.List(cmd.Context(), t.kind.Kind, a.listTenant(t.kind), selector, client.WithFieldSelector(fields))
					if err != nil {
						return err
					}
					for _, o := range objs {
						refs = append(refs, apiv1.RefOf(o))
					}
				}
			}
			if len(refs) == 0 {
				fmt.Fprintln(a.stderr, "No objects selected.")
				return nil
			}
			return a.deleteRefs(cmd, c, refs, ignoreNotFound, opts, suffix)
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin) naming the objects to delete; repeatable")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "delete the objects of KIND with these labels, e.g. 'app=web'")
	cmd.Flags().StringVar(&fields, "field-selector", "", "delete the objects of KIND with these fields, e.g. 'spec.host=h3'")
	cmd.Flags().BoolVar(&allObj, "all", false, "delete every object of KIND (in the tenant, or all with -A)")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat objects that do not exist as deleted (exit 0)")
	addDryRunFlag(cmd, &dryRun)
	return cmd
}

// deleteRefs deletes refs in order, reporting each; it goes on after a
// failure and returns an error if any failed.
func (a *app) deleteRefs(cmd *cobra.Command, cl *client.Client, refs []apiv1.Ref, ignoreNotFound bool, opts []apiv1.WriteOption, suffix string) error {
	ctx := cmd.Context()
	failed := 0
	for i, ref := range refs {
		_, err := cl.Delete(ctx, ref.Kind, ref.Tenant, ref.Name, opts...)
		switch {
		case err == nil:
			fmt.Fprintf(a.stdout, "%s deleted%s\n", ref, suffix)
		case apiv1.IsNotFound(err) && ignoreNotFound:
			fmt.Fprintf(a.stdout, "%s not found\n", ref)
		case fatal(cmd, err):
			return errors.Join(objectError(ref, err), fmt.Errorf("stopped after %d of %d objects", i, len(refs)))
		default:
			if apiv1.IsNotFound(err) {
				err = fmt.Errorf("%s not found", ref) // the same words whatever the server says
			}
			if len(refs) == 1 {
				return objectError(ref, err)
			}
			printError(a.stderr, objectError(ref, err))
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d objects were not deleted", failed, len(refs))
	}
	return nil
}
