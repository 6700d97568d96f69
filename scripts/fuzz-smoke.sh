#!/usr/bin/env bash
# Runs every go fuzz target in the module briefly (default 5000 executions
# each): a smoke test that the targets and their checked-in corpora still
# work. A count, not a duration: with a duration, Go 1.26's fuzz coordinator
# can fail a target with a bare "context deadline exceeded" when the time
# runs out under load (golang/go#75804, fixed in Go 1.27).
set -euo pipefail
cd "$(dirname "$0")/.."
t="${1:-5000x}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
n=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "fuzz $pkg $f ($t)"
    if ! go test "$pkg" -run '^$' -fuzz "^$f\$" -fuzztime "$t" >"$log" 2>&1; then
      cat "$log"
      exit 1
    fi
    n=$((n + 1))
  done
done
echo "fuzz: $n targets ran for $t each"
