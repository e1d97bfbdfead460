#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh machine, and nothing that is there
# already. Only package registries are used (PyPI, the crate registry through cargo, and
# Debian's for python3-venv when it is missing).
#
# The Python tools (moto's server, cargo-lambda's Runtime API emulator) go into a virtualenv of
# this checkout, .tools/test (gitignored), never into the system Python: Debian 12 and
# Ubuntu 24.04 mark theirs externally managed (PEP 668) and refuse `pip install` into it.
# scripts/env.sh puts .tools/test/bin on PATH; the test kit also looks there.
#
# PYTHON (default python3) is the interpreter the virtualenv is made from; TOOLS_DIR (default
# .tools/test) where it goes.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_VERSION=5.2.5
CARGO_LAMBDA_VERSION=1.9.2
PYTHON=${PYTHON:-python3}
TOOLS_DIR=${TOOLS_DIR:-.tools/test}

command -v cargo >/dev/null || { echo "install-tools: cargo is missing; install Rust (rustup, 1.94 or newer) first" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || { echo "install-tools: $PYTHON is missing; install Python 3.9 or newer first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt

# venv: `python3 -m venv DIR`, installing Debian's python3-venv once if the module cannot
# make one (Debian splits ensurepip out of python3).
venv() {
    local dir=$1 err
    if err=$("$PYTHON" -m venv "$dir" 2>&1); then
        return 0
    fi
    rm -rf "$dir"
    if command -v apt-get >/dev/null 2>&1 && grep -q "ensurepip" <<<"$err"; then
        local sudo=""
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null 2>&1 || { echo "install-tools: $PYTHON cannot make a virtualenv; install python3-venv (as root: apt-get install python3-venv)" >&2; exit 1; }
            sudo="sudo"
        fi
        echo "install-tools: installing python3-venv with apt-get" >&2
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >&2
        "$PYTHON" -m venv "$dir" && return 0
    fi
    echo "install-tools: $PYTHON -m venv $dir failed:" >&2
    echo "$err" >&2
    exit 1
}

pins="$("$PYTHON" --version 2>&1) moto[server]==$MOTO_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION"
if ! { [ -f "$TOOLS_DIR/.pins" ] && [ "$(cat "$TOOLS_DIR/.pins")" = "$pins" ]; }; then
    echo "install-tools: installing moto $MOTO_VERSION and cargo-lambda $CARGO_LAMBDA_VERSION into $TOOLS_DIR" >&2
    rm -rf "$TOOLS_DIR"
    mkdir -p "$(dirname "$TOOLS_DIR")"
    venv "$TOOLS_DIR"
    "$TOOLS_DIR/bin/python" -m pip install --quiet --disable-pip-version-check \
        "moto[server]==$MOTO_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION" >&2
    printf '%s' "$pins" > "$TOOLS_DIR/.pins"
fi
for tool in moto_server cargo-lambda; do
    [ -x "$TOOLS_DIR/bin/$tool" ] || { echo "install-tools: $TOOLS_DIR/bin/$tool is missing after installing it" >&2; exit 1; }
done
