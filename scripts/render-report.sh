#!/usr/bin/env bash
# Renders a generated monthly credits report (credits.html) in headless Chromium, with no
# network, and prints the path of the screenshot (PNG).
#
#   scripts/render-report.sh [OUT_DIR] [MEMBERS] [LANGUAGE]   # default target/render-report, 300, en
#
# The HTML comes from `cargo run -p shared --example render-report` (a generated org in an
# in-process simulator, read and rendered exactly as monthly-report does). Chromium is
# installed with apt-get when missing. It runs with a fresh profile, every background service
# off, DNS answering NOTFOUND for every name and a dead proxy, so it cannot reach anything;
# the page itself declares `default-src 'none'`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

out_dir="${1:-target/render-report}"
members="${2:-300}"
lang="${3:-en}"
mkdir -p "$out_dir"
html="$(realpath "$out_dir")/credits.html"
png="$(realpath "$out_dir")/credits.png"

cargo run --quiet -p shared --example render-report -- "$html" "$members" "$lang" >/dev/null

chrome=""
for candidate in chromium chromium-browser; do
    if command -v "$candidate" >/dev/null 2>&1; then
        chrome="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$chrome" ]; then
    echo "chromium not found; installing it with apt-get" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install chromium" >&2; exit 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
    chrome="$(command -v chromium)"
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
rm -f "$png"
"$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-default-apps --disable-extensions --no-default-browser-check \
    --host-resolver-rules="MAP * ~NOTFOUND" --proxy-server="http://127.0.0.1:9" \
    --user-data-dir="$profile" --hide-scrollbars \
    --screenshot="$png" --window-size=1200,1600 "file://$html" >"$profile/chromium.log" 2>&1 || true
if [ ! -s "$png" ]; then
    echo "chromium wrote no screenshot at $png; its output:" >&2
    tail -n 30 "$profile/chromium.log" >&2
    exit 1
fi
echo "$png"
