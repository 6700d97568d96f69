#!/usr/bin/env bash
# The test command from the README. Real etcd and, as root, real network
# namespaces; data-plane tests skip with a message when not root.
#
# Every package runs under the race detector: the -race run is the test
# run (one run, the same tests), and it fits CI's budget (about 3.5 minutes
# on 2 cores, compiled from a warm cache; see .ci/run). No package is
# excluded.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -timeout 15m -race ./...
# The config stream's benchmark baseline (wire: the weftclearstream tag,
# frames not sealed) still builds and frames as the sealed stream does.
go vet -tags weftclearstream ./wire ./cmd/weft
go test -count=1 -tags weftclearstream -run TestClearStream ./wire
