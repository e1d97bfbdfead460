#!/usr/bin/env bash
# `make demo`: the watchdog's day, locally — portal-sim, moto, the Lambda Runtime API emulator
# and the real function binaries, all on loopback, all stopped at the end (tests/demo/main.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/install-tools.sh
cargo build --quiet --locked --workspace --bins
exec cargo run --quiet --locked -p tests --bin demo
