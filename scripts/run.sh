#!/usr/bin/env bash
# Starts a weft controller with embedded etcd and applies the two-tenant example.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o ./bin/weft ./cmd/weft
data="${WEFT_DATA_DIR:-./weft-data}"
addr="${WEFT_API:-127.0.0.1:7443}"
# The controller writes a context with its CA and a cluster-admin token here
# on its first start.
export WEFT_CONFIG="$(realpath -m "$data")/admin.config"
./bin/weft controller --data-dir "$data" --api-listen "$addr" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  [ -f "$WEFT_CONFIG" ] && ./bin/weft version >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "weft controller exited" >&2; exit 1; }
  sleep 0.1
done
./bin/weft apply -f examples/two-tenants.yaml
cat <<MSG

weft is running (API https://$addr, data in $data). Try, in another shell:
  export WEFT_CONFIG=$WEFT_CONFIG
  ./bin/weft get vpcs --all-tenants
  ./bin/weft get endpoints --all-tenants -o yaml
  ./bin/weft describe vpc main --tenant acme
  ./bin/weft delete vpc main --tenant acme      # refused: it has subnets
  ./bin/weft token create --role tenant-viewer --tenant acme > acme.token
Ctrl-C stops the controller.
MSG
wait $pid
