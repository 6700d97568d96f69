#!/usr/bin/env bash
# Checks that a release is reproducible: builds the commit checked out here
# with scripts/release.sh twice, in two clones at different paths, each
# with its own empty build cache (so that nothing compiled once is reused),
# and compares every file of the two dist/ directories (the binaries and
# the OCI image) byte for byte. WEFT_RELEASE_PLATFORMS (see release.sh)
# narrows the platforms: CI runs it for linux/amd64 (two cold builds);
# both platforms take about twice as long.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(git rev-parse HEAD)
work=$(mktemp -d "${TMPDIR:-/tmp}/weft-reproducible.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Paths of different lengths: a path left in a binary would shift its bytes.
dirs=("$work/a/weft" "$work/bb/ccc/weft")
for i in 0 1; do
  src=${dirs[$i]}
  git clone -q --no-checkout "$PWD" "$src"
  git -C "$src" checkout -q --detach "$rev"
  echo "== build $((i + 1)) in $src"
  GOCACHE="$work/cache$i" "$src/scripts/release.sh"
done

if ! diff -u "${dirs[0]}/dist/SHA256SUMS" "${dirs[1]}/dist/SHA256SUMS"; then
  echo "reproducible: the two builds of $rev differ (above)" >&2
  exit 1
fi
echo "reproducible: two builds of $rev in different directories are identical ($(wc -l <"${dirs[0]}/dist/SHA256SUMS") files)"
