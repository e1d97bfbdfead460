#!/usr/bin/env bash
# `make fidelity`: Esri's own Python client (`arcgis` 2.4.4) as the simulator's judge.
# Runs the original notebook's cells verbatim against portal-sim over HTTPS (only the sign-in
# changes: GIS(url, user, password) instead of GIS("home")), reports each cell, then compares
# the notebook's results with what credit-steward computes on the same org
# (tests/fidelity/run_notebook.py). Not part of `make test`: it installs the arcgis package
# (~600 MB) into its own virtualenv, target/fidelity-venv, reused on later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
started=$(date +%s)

ARCGIS_VERSION=2.4.4
SIX_VERSION=1.17.0
SEED=7
MEMBERS=300
USER_NAME=steward_admin
# The generated org's admin password: a simulated secret (portal-sim's generate.rs), never real.
export FIDELITY_PASSWORD=sim-admin-password
VENV=target/fidelity-venv
OUT=target/fidelity
TARGET_DIR=${CARGO_TARGET_DIR:-target}
mkdir -p "$OUT"

echo "== virtualenv with arcgis==$ARCGIS_VERSION ($VENV)"
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('arcgis') != '$ARCGIS_VERSION' or m.version('six') != '$SIX_VERSION')" 2>/dev/null; then
    python3 -m venv "$VENV"
    # arcgis imports `six` (arcgis.raster) without declaring it; ArcGIS Notebooks ship it.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "arcgis==$ARCGIS_VERSION" "six==$SIX_VERSION"
fi

echo "== build portal-sim and fidelity-steward"
cargo build --quiet --locked -p portal-sim --bin portal-sim -p tests --bin fidelity-steward

sim_pid=""
cleanup() {
    if [[ -n "$sim_pid" ]]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
    echo "fidelity: took $(( $(date +%s) - started )) s"
}
trap cleanup EXIT

echo "== portal-sim (HTTPS, $MEMBERS members, seed $SEED)"
rm -f "$OUT/port" "$OUT/cert.pem"
"$TARGET_DIR/debug/portal-sim" --members "$MEMBERS" --seed "$SEED" --tls --host 127.0.0.1 --port 0 \
    --cert-out "$OUT/cert.pem" --port-file "$OUT/port" >"$OUT/portal-sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 100); do [[ -s "$OUT/port" ]] && break; sleep 0.1; done
if [[ ! -s "$OUT/port" ]]; then
    echo "fidelity: portal-sim did not start; its log:" >&2; cat "$OUT/portal-sim.log" >&2; exit 1
fi
URL="https://127.0.0.1:$(cat "$OUT/port")"
# Esri's client verifies certificates through requests (certifi by default): trust the
# simulator's self-signed certificate for this run only.
export REQUESTS_CA_BUNDLE="$PWD/$OUT/cert.pem" SSL_CERT_FILE="$PWD/$OUT/cert.pem"

echo "== credit-steward on the same org (reads only)"
"$TARGET_DIR/debug/fidelity-steward" --url "$URL" --user "$USER_NAME" --ca-file "$OUT/cert.pem" >"$OUT/steward.json"

echo "== the notebook's cells with arcgis $ARCGIS_VERSION (full transcripts in $OUT/run-*.txt)"
"$VENV/bin/python" tests/fidelity/run_notebook.py --notebook tests/fidelity/seed-notebook.txt \
    --url "$URL" --user "$USER_NAME" --steward "$OUT/steward.json" --ca-file "$OUT/cert.pem" --out-dir "$OUT"
