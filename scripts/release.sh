#!/usr/bin/env bash
# `make release`: what an infrastructure team deploys without Rust, in dist/:
#   scan-credits.zip, allocate.zip, allocation-jobs.zip, monthly-report.zip (arm64 bootstraps),
#   SHA256SUMS, template.yaml (CodeUris pointing at the zips, no build step), samconfig.toml.
# Then checks it (scripts/release-check.sh). Deploy with `cd dist && sam deploy --guided`
# (or `--config-env prod`), or `aws cloudformation package` + `deploy` (infra/README.md).
#
# The bootstraps come from `sam build` (scripts/infra-build.sh: cargo-lambda and Zig, the
# release profile of Cargo.toml), which needs the aarch64 standard library (`rustup target add
# aarch64-unknown-linux-gnu`). A cold build takes 12-15 minutes on 2 cores.
#   OUT (default dist), BUILD_DIR (default .aws-sam/build).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-dist}
build=${BUILD_DIR:-.aws-sam/build}
BUILD_DIR=$build scripts/infra-build.sh
rm -rf "$out"
infra/.tools/sam/bin/python scripts/release-package.py "$build" "$out"
scripts/release-check.sh "$out"
(cd "$out" && ls -l && cat SHA256SUMS)
