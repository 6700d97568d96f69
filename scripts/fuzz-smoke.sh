#!/usr/bin/env bash
# Runs every go fuzz target in the module for a short time (default 5s each):
# a smoke test that the targets and their checked-in corpora still work.
set -euo pipefail
cd "$(dirname "$0")/.."
t="${1:-5s}"
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
