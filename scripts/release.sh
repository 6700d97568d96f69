#!/usr/bin/env bash
# Builds a release of the commit checked out here into dist/ ($DIST
# overrides it; $WEFT_RELEASE_PLATFORMS, space-separated, the platforms):
#   dist/linux-amd64/{weft,weft-cni}, dist/linux-arm64/{weft,weft-cni}
#   dist/oci/                  an OCI image layout: one image per platform
#                              and an index, tagged with the version (see
#                              internal/mkimage)
#   dist/SHA256SUMS
# Run it in a clean clone: it refuses uncommitted changes and a checkout
# where Go cannot read the commit (a git worktree).
#
# The same commit gives the same bytes in any directory, on any machine
# (scripts/reproducible.sh checks it):
#   - the Go toolchain is the one go.mod names (GOTOOLCHAIN: the go command
#     fetches it if the local one is another);
#   - CGO_ENABLED=0: static binaries, no C toolchain;
#   - -trimpath: no paths of the build machine in the binaries;
#   - -ldflags='-s -w -buildid=': no symbol table, DWARF or build ID;
#   - GOFLAGS, GOAMD64, GOARM64, GOEXPERIMENT and GOFIPS140 are fixed,
#     whatever the environment or `go env -w` set;
#   - -buildvcs=true: Go records the commit (vcs.revision, vcs.time) and
#     derives the version from its git tag (v1.2.3; between tags a
#     pseudo-version such as v1.2.4-0.20261207101500-0123456789ab), which
#     `weft version` and `weft-cni version` print. The image is tagged with
#     the same version.
set -euo pipefail
cd "$(dirname "$0")/.."
dist=${DIST:-dist}
# WEFT_RELEASE_PLATFORMS narrows the platforms (CI checks reproducibility
# on linux/amd64 alone to stay in its time budget).
read -r -a platforms <<<"${WEFT_RELEASE_PLATFORMS:-linux/amd64 linux/arm64}"

if [ -n "$(git status --porcelain)" ]; then
  echo "release: uncommitted changes; commit them or build from a clean clone" >&2
  git status --short >&2
  exit 1
fi
revision=$(git rev-parse HEAD)
created=$(git log -1 --format=%cI)

export GOTOOLCHAIN="go$(go list -m -f '{{.GoVersion}}')"
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=true -mod=readonly" GOAMD64=v1 GOARM64=v8.0 GOEXPERIMENT= GOFIPS140=off
ldflags="-s -w -buildid="

cmds=(weft weft-cni)

rm -rf "$dist"
for p in "${platforms[@]}"; do
  os=${p%/*} arch=${p#*/}
  for c in "${cmds[@]}"; do
    echo "== $c $p"
    GOOS=$os GOARCH=$arch go build -ldflags="$ldflags" -o "$dist/$os-$arch/$c" "./cmd/$c"
    # What Go recorded in the binary: the commit, unmodified, this platform.
    info=$(go version -m "$dist/$os-$arch/$c")
    for want in "vcs.revision=$revision" "vcs.modified=false" "GOARCH=$arch" "CGO_ENABLED=0" "-trimpath=true"; do
      if ! grep -qF -- "$want" <<<"$info"; then
        echo "release: $dist/$os-$arch/$c lacks $want in its build information (a git worktree? clone the repository):" >&2
        echo "$info" | grep -v '^\s*dep' >&2
        exit 1
      fi
    done
  done
done

version=$(go version -m "$dist/linux-amd64/weft" | awk '$1 == "mod" {print $3}')
if [ "$(go env GOHOSTARCH)" = amd64 ]; then
  # The release binaries report what they were built from.
  for c in "weft version --client" "weft-cni version"; do
    v=$("$dist/linux-amd64/"$c -o json)
    if ! grep -qF "\"version\": \"$version\"" <<<"$v" || ! grep -qF "\"revision\": \"$revision\"" <<<"$v"; then
      echo "release: $c does not report $version $revision:" >&2
      echo "$v" >&2
      exit 1
    fi
  done
fi

echo "== OCI image $version"
go run ./internal/mkimage -o "$dist/oci" -version "$version" -revision "$revision" -created "$created" \
  $(for p in "${platforms[@]}"; do echo "$p=$dist/${p/\//-}"; done)
(cd "$dist" && find . -type f ! -name SHA256SUMS | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
echo "release $version ($revision) in $dist:"
(cd "$dist" && grep -v ' ./oci/' SHA256SUMS)
