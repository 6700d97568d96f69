package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func (a *app) newDeleteCmd() *cobra.Command {
	var (
		files          []string
		ignoreNotFound bool
	)
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME | -f FILE|DIR|- ...)",
		Short: "Delete one object, or the objects described in files",
		Long: `Delete the object NAME of KIND, or every object named in the files given with
-f (the same inputs as apply: files, directories, - for stdin).

Objects from files are deleted in reverse dependency order (endpoints first,
tenants last) so that nothing is deleted while something still refers to it.
One line per object:

  endpoint/acme/web-1 deleted

An object that does not exist is reported as "not found" and makes the exit
code 1, unless --ignore-not-found. The controller refuses to delete an object
that others depend on and names them; the remaining objects are still
deleted and the exit code is 1.`,
		Example: `  weft delete endpoint web-1 --tenant acme
  weft delete host h3
  weft delete -f network.yaml
  weft delete -f network.yaml --ignore-not-found`,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(files) > 0 && len(args) > 0:
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("give either KIND NAME or -f, not both")}
			case len(files) > 0:
				objs, err := a.readObjects(files, cmd.Flags().Changed("tenant"))
				if err != nil {
					return err
				}
				c, err := a.client()
				if err != nil {
					return err
				}
				sortByDependency(objs, true)
				refs := make([]apiv1.Ref, len(objs))
				for i, o := range objs {
					refs[i] = apiv1.RefOf(o)
				}
				return a.deleteRefs(cmd, c, refs, ignoreNotFound)
			case len(args) == 2:
				k, err := lookupKind(args[0])
				if err != nil {
					return err
				}
				tenant, err := a.tenantFor(k)
				if err != nil {
					return err
				}
				c, err := a.client()
				if err != nil {
					return err
				}
				return a.deleteRefs(cmd, c, []apiv1.Ref{{Kind: k.Kind, Tenant: tenant, Name: args[1]}}, ignoreNotFound)
			default:
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("want KIND NAME or -f FILE, got %d argument(s)", len(args))}
			}
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin) naming the objects to delete; repeatable")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat objects that do not exist as deleted (exit 0)")
	return cmd
}

// deleteRefs deletes refs in order, reporting each; it goes on after a
// failure and returns an error if any failed.
func (a *app) deleteRefs(cmd *cobra.Command, cl *client.Client, refs []apiv1.Ref, ignoreNotFound bool) error {
	ctx := cmd.Context()
	failed := 0
	for i, ref := range refs {
		err := deleteOne(ctx, cl, ref)
		switch {
		case err == nil:
			fmt.Fprintf(a.stdout, "%s deleted\n", ref)
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

func deleteOne(ctx context.Context, cl *client.Client, ref apiv1.Ref) error {
	_, err := cl.Delete(ctx, ref.Kind, ref.Tenant, ref.Name)
	return err
}
