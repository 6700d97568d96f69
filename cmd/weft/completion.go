package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// Shell completion: cobra's `weft completion bash|zsh|fish|powershell`
// writes the script; the script asks `weft __complete ARGS` for
// candidates, which the functions below give: kinds, and the names of
// objects and tenants read from the controller of the current context.

// completeTimeout bounds the API calls of one completion: a shell waits.
const completeTimeout = 5 * time.Second

// completeObjects completes the object arguments of get, describe, delete
// and wait: a kind first (or KIND/NAME), then names of that kind.
func (a *app) completeObjects(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	const noFiles = cobra.ShellCompDirectiveNoFileComp
	if len(args) == 0 {
		if kind, prefix, ok := strings.Cut(toComplete, "/"); ok {
			k, ok := apiv1.LookupKind(kind)
			if !ok {
				return nil, noFiles
			}
			var out []string
			for _, n := range a.objectNames(cmd.Context(), k, prefix) {
				out = append(out, kind+"/"+n)
			}
			return out, noFiles
		}
		return completeKinds(toComplete), noFiles
	}
	if strings.Contains(args[0], "/") {
		return nil, noFiles
	}
	var out []string
	for kind := range strings.SplitSeq(args[0], ",") {
		if k, ok := apiv1.LookupKind(kind); ok {
			for _, n := range a.objectNames(cmd.Context(), k, toComplete) {
				if !slices.Contains(args[1:], n) && !slices.Contains(out, n) {
					out = append(out, n)
				}
			}
		}
	}
	return out, noFiles
}

// completeKinds returns the plural and short names of the kinds that
// start with prefix; after a comma, kinds to add to the list.
func completeKinds(prefix string) []string {
	head := ""
	if i := strings.LastIndexByte(prefix, ','); i >= 0 {
		head, prefix = prefix[:i+1], prefix[i+1:]
	}
	var out []string
	for _, k := range apiv1.Kinds() {
		for _, n := range append([]string{k.Plural}, k.Short...) {
			if strings.HasPrefix(n, prefix) {
				out = append(out, head+n)
			}
		}
	}
	return out
}

// completeTenants completes --tenant with the tenants' names.
func (a *app) completeTenants(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return a.objectNames(cmd.Context(), apiv1.MustKind(apiv1.KindTenant), toComplete), cobra.ShellCompDirectiveNoFileComp
}

// objectNames lists the names of kind k (in the tenant a list would use)
// that start with prefix; nothing if the controller cannot be asked.
func (a *app) objectNames(ctx context.Context, k apiv1.KindInfo, prefix string) []string {
	if ctx == nil {
		ctx = context.Background()
	}
	cl, err := a.client()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	objs, _, err := cl.List(ctx, k.Kind, a.listTenant(k), "")
	if err != nil {
		return nil
	}
	var out []string
	for _, o := range objs {
		if n := o.GetObjectMeta().Name; strings.HasPrefix(n, prefix) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
