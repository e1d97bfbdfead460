#!/usr/bin/env bash
# `make demo`: start the simulated ArcGIS Online org, sign in like credit-steward will, and
# print what it serves. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
MEMBERS=${MEMBERS:-2000}
SEED=${SEED:-7}
workdir=$(mktemp -d)
cleanup() { [ -n "${SIM_PID:-}" ] && kill "$SIM_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$workdir"; }
trap cleanup EXIT

cargo build --quiet --locked -p portal-sim
./target/debug/portal-sim --members "$MEMBERS" --seed "$SEED" --port-file "$workdir/port" > "$workdir/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 100); do [ -s "$workdir/port" ] && break; sleep 0.1; done
[ -s "$workdir/port" ] || { echo "portal-sim did not start:"; cat "$workdir/sim.log"; exit 1; }
cat "$workdir/sim.log"
python3 scripts/demo_summary.py "http://127.0.0.1:$(cat "$workdir/port")"
