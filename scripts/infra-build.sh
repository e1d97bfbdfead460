#!/usr/bin/env bash
# `sam build` of infra/template.yaml without Docker (cargo-lambda + Zig from PyPI), then checks
# that each function's bootstrap is a Linux ELF for the template's architecture.
#
#   scripts/infra-build.sh                  # arm64, as deployed; output in .aws-sam/build
#   scripts/infra-build.sh --arch x86_64    # build-pipeline check on a machine without the
#                                           # aarch64 std (a copy of the template, never deployed)
#
# Environment: BUILD_DIR (default .aws-sam/build), CARGO_TARGET_DIR (default target/sam: its own
# directory, so a release build never holds the lock that `cargo test` waits on).
# Slow: a cold release build of the three functions takes 12-15 minutes on 2 cores.
#
# The arm64 build needs the aarch64-unknown-linux-gnu standard library. cargo-lambda runs
# `rustup target add` for it when it is missing, which downloads from the Rust project's
# distribution server: do that once where that server is reachable (a deploy machine or CI
# with internet), e.g. `rustup target add aarch64-unknown-linux-gnu`.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=arm64
case "${1:-}" in
    "") ;;
    --arch) arch=${2:?--arch needs arm64 or x86_64} ;;
    *) echo "usage: $0 [--arch arm64|x86_64]" >&2; exit 2 ;;
esac
case $arch in
    arm64) machine=183; target=aarch64-unknown-linux-gnu ;;   # e_machine EM_AARCH64 = 0xB7
    x86_64) machine=62; target=x86_64-unknown-linux-gnu ;;    # e_machine EM_X86_64 = 0x3E
    *) echo "infra-build: --arch must be arm64 or x86_64" >&2; exit 2 ;;
esac

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0
scripts/infra-tools.sh sam
# sam, cargo-lambda, and the venv's python3 with the ziglang module that cargo-lambda uses.
export PATH="$PWD/infra/.tools/sam/bin:$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/sam}
build_dir=${BUILD_DIR:-.aws-sam/build}

# Logical id -> package, as in the template.
declare -A functions=([ScanCreditsFunction]=scan-credits [AllocateFunction]=allocate [AllocationJobsFunction]=allocation-jobs [MonthlyReportFunction]=monthly-report)
for fn in "${functions[@]}"; do
    [ -f "functions/$fn/Cargo.toml" ] || { echo "infra-build: functions/$fn/Cargo.toml does not exist yet" >&2; exit 1; }
done
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "infra-build: the $target standard library is not installed; cargo-lambda will try" \
         "'rustup target add $target', which needs the Rust distribution server" >&2
fi

template=infra/template.yaml
if [ "$arch" != arm64 ]; then
    # A throw-away copy with absolute CodeUris and the other architecture.
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    sed -e "s|CodeUri: \.\./functions/|CodeUri: $PWD/functions/|" \
        -e "s|Architectures: \[arm64\]|Architectures: [$arch]|" infra/template.yaml > "$tmp/template.yaml"
    cp infra/samconfig.toml "$tmp/"
    grep -q "Architectures: \[$arch\]" "$tmp/template.yaml" || { echo "infra-build: could not switch the architecture" >&2; exit 1; }
    template=$tmp/template.yaml
fi

start=$(date +%s)
echo "infra-build: sam build ($arch, CARGO_TARGET_DIR=$CARGO_TARGET_DIR) -> $build_dir"
sam build -t "$template" --build-dir "$build_dir"
echo "infra-build: sam build took $(( $(date +%s) - start )) s"

passed=0
failed=0
for id in "${!functions[@]}"; do
    if python3 - "$build_dir/$id/bootstrap" "$machine" <<'EOF'
import os, struct, sys
path, want = sys.argv[1], int(sys.argv[2])
try:
    with open(path, "rb") as f:
        head = f.read(20)
except OSError as e:
    sys.exit(f"{path}: {e.strerror}")
if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
    sys.exit(f"{path}: not a 64-bit little-endian ELF file")
machine = struct.unpack_from("<H", head, 18)[0]
if machine != want:
    sys.exit(f"{path}: e_machine is {machine:#x}, expected {want:#x}")
print(f"{path}: ELF64, e_machine {machine:#x}, {os.path.getsize(path) / 1e6:.1f} MB, executable: {os.access(path, os.X_OK)}")
EOF
    then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "infra-build: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
