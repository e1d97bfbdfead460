#!/usr/bin/env bash
# `make faults`: the fault matrix (tests/faults). The real allocate and scan-credits binaries
# under the Lambda Runtime API emulator, portal-sim in-process and moto; kills at exact points,
# faults, short deadlines and concurrent writers; then the ArcGIS state, the audit trail and the
# replies are checked. One line per scenario and a total; non-zero exit on any failure.
# Arguments select scenarios by number (`scripts/faults.sh 1 9`); FAULTS_VERBOSE=1 lists every
# failure of a failed scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/install-tools.sh
echo "== build"; cargo build --workspace --bins --locked
echo "== fault matrix"; cargo run --locked --quiet -p tests --bin faults -- "$@"
