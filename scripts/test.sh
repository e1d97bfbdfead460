#!/usr/bin/env bash
# `make test`: every check and every test, from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/install-tools.sh
echo "== format"; cargo fmt --all --check
echo "== lint"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== unused dependencies"
# cargo-machete: every dependency a manifest declares must be used by its crate. Installed
# here, not in install-tools.sh, so that `make demo` does not build it.
MACHETE_VERSION=0.9.2
[ "$(cargo machete --version 2>/dev/null)" = "$MACHETE_VERSION" ] ||
    cargo install --quiet --locked cargo-machete --version "$MACHETE_VERSION"
cargo machete
echo "== build"; cargo build --workspace --bins --locked
echo "== infra"; scripts/infra-check.sh
echo "== release packaging"; scripts/test-release.sh
echo "== install script on an externally managed Python"; scripts/test-install-tools.sh
echo "== build tests"; cargo test --workspace --locked --no-run
echo "== tests"; cargo test --workspace --locked
echo "== fault matrix"; cargo run --locked --quiet -p tests --bin faults
