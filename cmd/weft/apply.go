package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func (a *app) newApplyCmd() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|- [-f ...]",
		Short: "Create or update objects from YAML or JSON files",
		Long: `Create or update the objects described in YAML or JSON files.

Each -f names a file, a directory (every *.yaml, *.yml and *.json file in it,
not recursively, in name order) or - for standard input. A file may hold many
documents separated by "---". All files are decoded first: if any document is
malformed nothing is applied and the error names the file and line.

Objects are then applied in dependency order (tenants, hosts, QoS classes,
VPCs, subnets, security policies, endpoints), in file order within a kind.
Each object is created if it does not exist, left alone if its labels and
spec already match, or updated; one line per object says which:

  vpc/acme/main created
  subnet/acme/a unchanged
  endpoint/acme/web-1 configured

A tenant-scoped object without metadata.tenant gets --tenant. An object the
controller refuses is reported on stderr and the rest are still applied; the
exit code is then 1.`,
		Example: `  # Apply one file
  weft apply -f network.yaml

  # Apply every manifest in a directory, and another file
  weft apply -f manifests/ -f hosts.yaml

  # From standard input, into tenant acme where the files name no tenant
  cat vpc.yaml | weft apply --tenant acme -f -`,
		Args: exactArgs(0, "no arguments (name files with -f)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("no input: give -f FILE, -f DIR or -f -")}
			}
			objs, err := a.readObjects(files, cmd.Flags().Changed("tenant"))
			if err != nil {
				return err
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			sortByDependency(objs, false)
			failed := 0
			for i, o := range objs {
				ref := apiv1.RefOf(o)
				result, _, err := cl.Apply(cmd.Context(), o)
				if err != nil {
					if len(objs) == 1 {
						return objectError(ref, err)
					}
					if fatal(cmd, err) {
						return errors.Join(objectError(ref, err), fmt.Errorf("stopped after %d of %d objects", i, len(objs)))
					}
					printError(a.stderr, objectError(ref, err))
					failed++
					continue
				}
				fmt.Fprintf(a.stdout, "%s %s\n", ref, result)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d objects failed to apply", failed, len(objs))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin) to read objects from; repeatable")
	return cmd
}

// fatal reports whether err means the remaining objects cannot fare better:
// the controller is unreachable or the command was interrupted.
func fatal(cmd *cobra.Command, err error) bool {
	var ue *client.UnreachableError
	return errors.As(err, &ue) || cmd.Context().Err() != nil
}

// objectError prefixes err with ref unless its message already names it.
func objectError(ref apiv1.Ref, err error) error {
	if strings.Contains(err.Error(), ref.String()) {
		return err
	}
	return fmt.Errorf("%s: %w", ref, err)
}

// source is one input of -f: a file, a file in a directory, or stdin.
type source struct {
	name string
	data []byte
}

// readObjects reads and decodes every -f input. Decoding is all or nothing:
// every error of every input is reported, and then no object is returned.
// Tenant-scoped objects without a tenant get --tenant; explicitTenant says
// --tenant was given on the command line, in which case an object naming
// another tenant is an error (a tenant from WEFT_TENANT yields to the file).
func (a *app) readObjects(files []string, explicitTenant bool) ([]apiv1.Object, error) {
	srcs, err := a.readSources(files)
	if err != nil {
		return nil, err
	}
	var (
		objs []apiv1.Object
		errs []error
	)
	for _, s := range srcs {
		decoded, err := apiv1.DecodeDocuments(s.data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
			continue
		}
		for _, o := range decoded {
			k, ok := apiv1.LookupKind(o.GetTypeMeta().Kind)
			if !ok { // DecodeDocuments only returns known kinds; be safe
				errs = append(errs, fmt.Errorf("%s: unknown kind %q", s.name, o.GetTypeMeta().Kind))
				continue
			}
			m := o.GetObjectMeta()
			switch {
			case !k.Namespaced:
			case m.Tenant == "" && a.tenant == "":
				errs = append(errs, fmt.Errorf("%s: %s: metadata.tenant is not set: set it in the file or pass --tenant",
					s.name, apiv1.RefOf(o)))
				continue
			case m.Tenant == "":
				m.Tenant = a.tenant
			case explicitTenant && m.Tenant != a.tenant:
				errs = append(errs, fmt.Errorf("%s: %s: its tenant differs from --tenant %q",
					s.name, apiv1.RefOf(o), a.tenant))
				continue
			}
			objs = append(objs, o)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("no objects in %s", strings.Join(files, ", "))
	}
	return objs, nil
}

// readSources expands directories and reads every input.
func (a *app) readSources(files []string) ([]source, error) {
	var (
		out       []source
		readStdin bool
	)
	for _, f := range files {
		if f == "-" {
			if readStdin {
				return nil, usageErrorf("-f - given twice")
			}
			readStdin = true
			data, err := io.ReadAll(a.env.stdin)
			if err != nil {
				return nil, fmt.Errorf("read standard input: %w", err)
			}
			out = append(out, source{name: "<stdin>", data: data})
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return nil, fileError(f, err)
		}
		names := []string{f}
		if fi.IsDir() {
			names, err = manifestsIn(f)
			if err != nil {
				return nil, err
			}
			if len(names) == 0 {
				return nil, fmt.Errorf("%s: no *.yaml, *.yml or *.json files in the directory", f)
			}
		}
		for _, n := range names {
			data, err := os.ReadFile(n)
			if err != nil {
				return nil, fileError(n, err)
			}
			out = append(out, source{name: n, data: data})
		}
	}
	return out, nil
}

// manifestsIn lists the manifest files directly in dir, sorted by name.
func manifestsIn(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fileError(dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
			names = append(names, filepath.Join(dir, e.Name()))
		}
	}
	return names, nil // os.ReadDir sorts by name
}

// fileError says which input could not be read, without repeating the path
// that an *fs.PathError already carries.
func fileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("read %s: %w", path, err)
}

// sortByDependency orders objects by the dependency order of their kinds
// (apiv1.Kinds), or its reverse, keeping input order within a kind.
func sortByDependency(objs []apiv1.Object, reverse bool) {
	rank := map[string]int{}
	for i, k := range apiv1.Kinds() {
		rank[k.Kind] = i
	}
	sort.SliceStable(objs, func(i, j int) bool {
		ri, rj := rank[objs[i].GetTypeMeta().Kind], rank[objs[j].GetTypeMeta().Kind]
		if reverse {
			return ri > rj
		}
		return ri < rj
	})
}
