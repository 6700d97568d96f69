#!/usr/bin/env bash
# Starts a weft controller with embedded etcd and applies the two-tenant example.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o ./bin/weft ./cmd/weft
data="${WEFT_DATA_DIR:-./weft-data}"
addr="${WEFT_API:-127.0.0.1:7443}"
export WEFT_SERVER="http://$addr"
./bin/weft controller --data-dir "$data" --api-listen "$addr" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  ./bin/weft version >/dev/null 2>&1 && break
  sleep 0.1
done
./bin/weft apply -f examples/two-tenants.yaml
cat <<MSG

weft is running (API $WEFT_SERVER, data in $data). Try, in another shell:
  export WEFT_SERVER=$WEFT_SERVER
  ./bin/weft get vpcs --all-tenants
  ./bin/weft get endpoints --all-tenants -o yaml
  ./bin/weft describe vpc main --tenant acme
  ./bin/weft delete vpc main --tenant acme      # refused: it has subnets
Ctrl-C stops the controller.
MSG
wait $pid
