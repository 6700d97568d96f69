package main

import (
	"fmt"
	"strings"

	apiv1 "github.com/weftnet/weft/api/v1"
)

// target is what the object arguments of get, delete and wait name of one
// kind: some objects by name, or (no names) those the selectors select.
type target struct {
	kind  apiv1.KindInfo
	names []string
}

// parseTargets reads object arguments: "KIND[,KIND...] [NAME...]" (every
// name of every kind) or "KIND/NAME..." (each argument so). Kinds go by
// kind, plural or short name; the targets of one kind are merged, in the
// order they first appear.
func parseTargets(args []string) ([]target, error) {
	if len(args) == 0 {
		return nil, usageErrorf("want KIND [NAME...], KIND,KIND... or KIND/NAME...")
	}
	var out []target
	add := func(k apiv1.KindInfo, names ...string) {
		for i := range out {
			if out[i].kind.Kind == k.Kind {
				out[i].names = append(out[i].names, names...)
				return
			}
		}
		out = append(out, target{kind: k, names: names})
	}
	if strings.Contains(args[0], "/") {
		for _, a := range args {
			kind, name, _ := strings.Cut(a, "/")
			if name == "" || strings.Contains(name, "/") {
				return nil, usageErrorf("%q: want KIND/NAME (every argument so, or KIND NAME...)", a)
			}
			k, err := lookupKind(kind)
			if err != nil {
				return nil, err
			}
			add(k, name)
		}
		return out, nil
	}
	for kind := range strings.SplitSeq(args[0], ",") {
		k, err := lookupKind(kind)
		if err != nil {
			return nil, err
		}
		add(k)
	}
	for _, name := range args[1:] {
		if name == "" || strings.Contains(name, "/") {
			return nil, usageErrorf("%q: want a NAME after KIND (or every argument as KIND/NAME)", name)
		}
		for i := range out {
			out[i].names = append(out[i].names, name)
		}
	}
	return out, nil
}

// named reports whether any target names objects.
func named(ts []target) bool {
	for _, t := range ts {
		if len(t.names) > 0 {
			return true
		}
	}
	return false
}

// selectTargets reads the object arguments of delete and wait, which name
// objects, or a kind and the selectors (-l, --field-selector or --all
// for every object) that pick its objects, but not both.
func selectTargets(args []string, selector, fields string, all bool) ([]target, error) {
	targets, err := parseTargets(args)
	if err != nil {
		return nil, err
	}
	bySelector := selector != "" || fields != "" || all
	switch {
	case named(targets) && bySelector:
		return nil, usageErrorf("give NAMEs, or -l, --field-selector or --all, not both")
	case !named(targets) && !bySelector:
		return nil, usageErrorf("no objects named: give NAMEs, -l SELECTOR, --field-selector or --all")
	}
	if selector != "" {
		if _, err := apiv1.ParseSelector(selector); err != nil {
			return nil, usageErrorf("-l: %v", err)
		}
	}
	return targets, fieldSelectorFor(targets, fields)
}

// fieldSelectorFor checks a --field-selector against every kind of ts.
func fieldSelectorFor(ts []target, sel string) error {
	for _, t := range ts {
		if _, err := apiv1.ParseFieldSelector(t.kind.Kind, sel); err != nil {
			return usageErrorf("--field-selector: %v", err)
		}
	}
	return nil
}

// refString is how get -o name and wait print an object: kind/name.
func refString(o apiv1.Object) string {
	return fmt.Sprintf("%s/%s", strings.ToLower(o.GetTypeMeta().Kind), o.GetObjectMeta().Name)
}
