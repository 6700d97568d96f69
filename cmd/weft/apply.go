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
	var (
		files      []string
		serverSide bool
		dryRun     string
	)
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

An update replaces the object's labels, annotations, owner references and
spec with the file's. With --server-side the controller applies each
document instead (a PATCH of type application/apply-patch+yaml): it creates
the object if it does not exist, and otherwise sets exactly the fields the
document names, keeping those it does not name (labels or annotations that
other tools added, say); no field ownership is recorded, so a field the
document stops naming is kept: name it with null to remove it.

--dry-run=server sends every write as a dry run: the controller defaults,
validates, admits and counts quota as it would, and stores nothing.

A tenant-scoped object without metadata.tenant gets --tenant. An object the
controller refuses is reported on stderr and the rest are still applied; the
exit code is then 1.`,
		Example: `  # Apply one file
  weft apply -f network.yaml

  # Apply every manifest in a directory, and another file
  weft apply -f manifests/ -f hosts.yaml

  # From standard input, into tenant acme where the files name no tenant
  cat vpc.yaml | weft apply -n acme -f -

  # Check what the controller would say, without writing
  weft apply -f network.yaml --dry-run=server

  # Set only the fields the file names
  weft apply --server-side -f endpoint.yaml`,
		Args: exactArgs(0, "no arguments (name files with -f)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("no input: give -f FILE, -f DIR or -f -")}
			}
			opts, suffix, err := dryRunOptions(dryRun)
			if err != nil {
				return err
			}
			docs, err := a.readObjects(files, cmd.Flags().Changed("tenant"))
			if err != nil {
				return err
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			sortByDependency(docs, false)
			failed := 0
			for i, d := range docs {
				ref := apiv1.RefOf(d.Object)
				var result string
				if serverSide {
					result, _, err = cl.ServerSideApply(cmd.Context(), d.JSON, ref.Tenant, opts...)
				} else {
					result, _, err = cl.Apply(cmd.Context(), d.Object, opts...)
				}
				if err != nil {
					if len(docs) == 1 {
						return objectError(ref, err)
					}
					if fatal(cmd, err) {
						return errors.Join(objectError(ref, err), fmt.Errorf("stopped after %d of %d objects", i, len(docs)))
					}
					printError(a.stderr, objectError(ref, err))
					failed++
					continue
				}
				fmt.Fprintf(a.stdout, "%s %s%s\n", ref, result, suffix)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d objects failed to apply", failed, len(docs))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin) to read objects from; repeatable")
	cmd.Flags().BoolVar(&serverSide, "server-side", false, "let the controller apply each document: set the fields it names, keep the others")
	addDryRunFlag(cmd, &dryRun)
	return cmd
}

// addDryRunFlag adds --dry-run to a command that writes.
func addDryRunFlag(cmd *cobra.Command, v *string) {
	cmd.Flags().StringVar(v, "dry-run", "none", `"server": the controller checks every write as it would make it, and stores nothing`)
	cmd.Flags().Lookup("dry-run").NoOptDefVal = "server"
	_ = cmd.RegisterFlagCompletionFunc("dry-run", cobra.FixedCompletions([]string{"none", "server"}, cobra.ShellCompDirectiveNoFileComp))
}

// dryRunOptions reads --dry-run: the write options, and what to say after
// each object.
func dryRunOptions(v string) ([]apiv1.WriteOption, string, error) {
	switch v {
	case "none", "":
		return nil, "", nil
	case "server":
		return []apiv1.WriteOption{apiv1.WithDryRun()}, " (server dry run)", nil
	}
	return nil, "", usageErrorf("--dry-run %q: want none or server (the controller checks, nothing is stored)", v)
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
func (a *app) readObjects(files []string, explicitTenant bool) ([]apiv1.Document, error) {
	srcs, err := a.readSources(files)
	if err != nil {
		return nil, err
	}
	var (
		objs []apiv1.Document
		errs []error
	)
	for _, s := range srcs {
		decoded, err := apiv1.DecodeDocumentsJSON(s.data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
			continue
		}
		for _, d := range decoded {
			o := d.Object
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
			objs = append(objs, d)
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
func sortByDependency(objs []apiv1.Document, reverse bool) {
	rank := map[string]int{}
	for i, k := range apiv1.Kinds() {
		rank[k.Kind] = i
	}
	sort.SliceStable(objs, func(i, j int) bool {
		ri, rj := rank[objs[i].Object.GetTypeMeta().Kind], rank[objs[j].Object.GetTypeMeta().Kind]
		if reverse {
			return ri > rj
		}
		return ri < rj
	})
}
