#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh machine, and nothing that is there
# already. Only package registries are used (PyPI, and the crate registry through cargo).
set -euo pipefail
MOTO_VERSION=5.2.5
CARGO_LAMBDA_VERSION=1.9.2

need_pip() { # package==version
    local name=${1%%[=\[]*}
    local want=${1##*==}
    local have
    have=$(python3 -m pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}') || true
    [ "$have" = "$want" ] || python3 -m pip install --quiet --disable-pip-version-check "$1"
}

command -v cargo >/dev/null || { echo "install-tools: cargo is missing; install Rust (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
need_pip "moto[server]==${MOTO_VERSION}"
# The Lambda Runtime API emulator (`cargo lambda watch`); the wheel brings Zig for arm64 builds.
need_pip "cargo-lambda==${CARGO_LAMBDA_VERSION}"
for tool in moto_server cargo-lambda; do
    command -v "$tool" >/dev/null || { echo "install-tools: $tool is not on PATH after installing it" >&2; exit 1; }
done
