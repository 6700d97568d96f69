#!/usr/bin/env bash
# The test command from the README. Real etcd and, as root, real network
# namespaces; data-plane tests skip with a message when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
# -race on the packages with concurrency-heavy logic; the rest without, to fit CI's budget.
go test -count=1 -timeout 15m -race ./api/... ./controller/... ./wire/... ./client/...
go test -count=1 -timeout 15m $(go list ./... | grep -v -e /api/ -e /controller -e /wire -e /client)
