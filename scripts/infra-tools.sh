#!/usr/bin/env bash
# Installs the pinned infrastructure tools into two virtualenvs under infra/.tools/ (gitignored),
# and prints nothing when they are already there. Only PyPI is used.
#
#   infra/.tools/sam      cfn-lint, aws-sam-cli, cargo-lambda (+ its ziglang wheel)
#   infra/.tools/checkov  checkov, on its own: it pins an old boto3 that aws-sam-cli rejects
#
# Usage: scripts/infra-tools.sh [sam|checkov|all]   (default all)
# Afterwards: infra/.tools/sam/bin/{cfn-lint,sam,cargo-lambda}, infra/.tools/checkov/bin/checkov.
set -euo pipefail
cd "$(dirname "$0")/.."

# The pins. Bump them here and nowhere else; the stamp below makes every venv follow.
CFN_LINT=1.58.0
SAM_CLI=1.170.0
CARGO_LAMBDA=1.9.2
CHECKOV=3.3.30

TOOLS=infra/.tools
PYTHON=${PYTHON:-python3}

# make_venv NAME PKG==VER... : (re)creates $TOOLS/NAME unless its stamp lists exactly these pins.
make_venv() {
    local name=$1; shift
    local dir=$TOOLS/$name want
    want="$("$PYTHON" --version 2>&1) $*"
    if [ -f "$dir/.pins" ] && [ "$(cat "$dir/.pins")" = "$want" ]; then
        return 0
    fi
    echo "infra-tools: installing $* into $dir (a few minutes on a fresh machine)" >&2
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
    # A pin that pip resolved to something else (it never should) is an error, not a surprise.
    local spec pkg ver have
    for spec in "$@"; do
        pkg=${spec%%==*}; ver=${spec##*==}
        have=$("$dir/bin/python" -m pip show "$pkg" 2>/dev/null | awk '/^Version:/{print $2}')
        [ "$have" = "$ver" ] || { echo "infra-tools: $pkg is '$have', wanted $ver" >&2; exit 1; }
    done
    printf '%s' "$want" > "$dir/.pins"
}

what=${1:-all}
case $what in
    sam|all) make_venv sam "cfn-lint==$CFN_LINT" "aws-sam-cli==$SAM_CLI" "cargo-lambda==$CARGO_LAMBDA" ;;
esac
case $what in
    checkov|all) make_venv checkov "checkov==$CHECKOV" ;;
esac
case $what in
    sam|checkov|all) ;;
    *) echo "usage: $0 [sam|checkov|all]" >&2; exit 2 ;;
esac
