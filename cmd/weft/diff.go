package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/client"
)

func (a *app) newDiffCmd() *cobra.Command {
	var (
		files      []string
		serverSide bool
	)
	cmd := &cobra.Command{
		Use:   "diff -f FILE|DIR|- [-f ...]",
		Short: "Show what apply would change, as a unified diff of YAML",
		Long: `Show what 'weft apply' of the same files would change: for each object, a
unified diff of its YAML as stored now and as the controller says it would
store it (the apply is sent as a dry run, so defaulting, validation and
admission run, and nothing is stored). An object that does not exist yet is
all additions; one that apply would leave unchanged prints nothing.

The exit code is 0 when nothing would change, 1 when something would, and 2
when diff itself failed (as kubectl diff). --server-side diffs a server-side
apply ('weft apply --server-side') instead.`,
		Example: `  weft diff -f network.yaml
  weft diff -f manifests/ && echo "in sync"`,
		Args: exactArgs(0, "no arguments (name files with -f)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fail := func(err error) error { return &exitError{code: 2, err: err} }
			if len(files) == 0 {
				return fail(&usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("no input: give -f FILE, -f DIR or -f -")})
			}
			docs, err := a.readObjects(files, cmd.Flags().Changed("tenant"))
			if err != nil {
				return fail(err)
			}
			cl, err := a.client()
			if err != nil {
				return fail(err)
			}
			sortByDependency(docs, false)
			changed := false
			for _, d := range docs {
				ref := apiv1.RefOf(d.Object)
				var live apiv1.Object
				live, err := cl.Get(cmd.Context(), ref.Kind, ref.Tenant, ref.Name)
				if err != nil && !apiv1.IsNotFound(err) {
					return fail(objectError(ref, err))
				}
				var result string
				var next apiv1.Object
				if serverSide {
					result, next, err = cl.ServerSideApply(cmd.Context(), d.JSON, ref.Tenant, apiv1.WithDryRun())
				} else {
					result, next, err = cl.Apply(cmd.Context(), d.Object, apiv1.WithDryRun())
				}
				if err != nil {
					return fail(objectError(ref, err))
				}
				if result == client.Unchanged {
					continue
				}
				before, after := "", ""
				if live != nil {
					if before, err = yamlText(live); err != nil {
						return fail(err)
					}
				}
				if after, err = yamlText(next); err != nil {
					return fail(err)
				}
				if d := unifiedDiff(before, after, ref.String()+" (live)", ref.String()+" (after apply)"); d != "" {
					changed = true
					fmt.Fprint(a.stdout, d)
				}
			}
			if changed {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin) to read objects from; repeatable")
	cmd.Flags().BoolVar(&serverSide, "server-side", false, "diff a server-side apply (apply --server-side)")
	return cmd
}

func yamlText(o apiv1.Object) (string, error) {
	b, err := apiv1.Marshal(o, formatYAML)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", apiv1.RefOf(o), err)
	}
	return string(b), nil
}

// diffContext is the number of unchanged lines around each change.
const diffContext = 3

// unifiedDiff returns the unified diff (diff -u) of two texts, "" if they
// are equal. An empty text is a file that does not exist.
func unifiedDiff(a, b, nameA, nameB string) string {
	if a == b {
		return ""
	}
	x, y := splitLines(a), splitLines(b)
	// lcs[i][j] is the length of the longest common subsequence of x[i:]
	// and y[j:] (objects are a few hundred lines at most).
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	// The edit script: ' ', '-' or '+' before each line.
	type edit struct {
		op   byte
		line string
	}
	var script []edit
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			script = append(script, edit{' ', x[i]})
			i, j = i+1, j+1
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			script = append(script, edit{'-', x[i]}) // deletions first, as diff -u
			i++
		default:
			script = append(script, edit{'+', y[j]})
			j++
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", nameA, nameB)
	// Hunks: runs of changes with up to diffContext lines around them,
	// merged when their context touches.
	lineA, lineB := 1, 1 // line numbers at script[k]
	for k := 0; k < len(script); {
		if script[k].op == ' ' {
			lineA, lineB, k = lineA+1, lineB+1, k+1
			continue
		}
		start := max(k-diffContext, 0)
		for s := start; s < k; s++ { // back to the hunk's first context line
			lineA, lineB = lineA-1, lineB-1
		}
		end, quiet := k, 0
		for end < len(script) && quiet <= 2*diffContext {
			if script[end].op == ' ' {
				quiet++
			} else {
				quiet = 0
			}
			end++
		}
		end -= max(quiet-diffContext, 0)
		var body strings.Builder
		nA, nB := 0, 0
		for _, e := range script[start:end] {
			body.WriteByte(e.op)
			body.WriteString(e.line)
			body.WriteByte('\n')
			if e.op != '+' {
				nA++
			}
			if e.op != '-' {
				nB++
			}
		}
		fmt.Fprintf(&out, "@@ -%s +%s @@\n%s", hunkRange(lineA, nA), hunkRange(lineB, nB), body.String())
		lineA, lineB, k = lineA+nA, lineB+nB, end
	}
	return out.String()
}

// hunkRange writes the start,count of a hunk as diff -u does.
func hunkRange(start, n int) string {
	switch n {
	case 0:
		return fmt.Sprintf("%d,0", start-1)
	case 1:
		return fmt.Sprint(start)
	}
	return fmt.Sprintf("%d,%d", start, n)
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
