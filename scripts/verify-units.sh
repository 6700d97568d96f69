#!/usr/bin/env bash
# Checks the systemd units in deploy/ without a running systemd: `systemd-
# analyze verify` (sections, keys, values, executables; any message fails)
# and `systemd-analyze security` (the exposure score of each unit's
# sandbox must stay at or under its ceiling, so that an edit cannot loosen
# a unit unnoticed). What the units grant their processes is tested by
# TestAgentUnit and TestControllerUnit (internal/e2e), which run them
# under setpriv.
set -euo pipefail
cd "$(dirname "$0")/.."
units=(weft-controller.service weft-agent.service)
declare -A ceiling=([weft-controller.service]=1.5 [weft-agent.service]=5.6)

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# A root directory with the system's units, ours and stand-ins for the
# executables they run.
mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/bin"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "${units[@]/#/deploy/}" "$root/etc/systemd/system/"
cp /bin/true "$root/usr/local/bin/weft"
cp /bin/true "$root/usr/bin/install"

out=$(systemd-analyze verify --root="$root" "${units[@]}" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then
  echo "systemd-analyze verify:"; echo "$out"; exit 1
fi
for u in "${units[@]}"; do
  if ! out=$(systemd-analyze security --offline=true --root="$root" --threshold="${ceiling[$u]/./}" "$u" 2>&1); then
    echo "$out"; echo "$u: exposure above its ceiling ${ceiling[$u]}"; exit 1
  fi
  echo "$out" | tail -1
done
