#!/usr/bin/env bash
# The release packaging, checked in `make test` (where no aarch64 build is possible):
#   1. the packaged template passes the validators (cfn-lint, sam validate --lint, checkov);
#   2. the checker refuses what must not ship: x86_64 bootstraps (the debug builds stand in)
#      and a zip that does not match SHA256SUMS.
# The real arm64 release (`make release`) runs the same checker on the real zips.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=infra/.tools/sam/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PY" scripts/release-package.py --template-only "$work/template-only"
scripts/release-check.sh --template-only "$work/template-only"

# A release of the x86_64 debug binaries: packaged like the real one, refused by the checker.
declare -A ids=()
while read -r id package; do ids[$id]=$package; done < <("$PY" scripts/release-package.py --functions)
[ "${#ids[@]}" -gt 0 ] || { echo "test-release: no functions listed"; exit 1; }
target=$(realpath "${CARGO_TARGET_DIR:-target}")
for id in "${!ids[@]}"; do
    mkdir -p "$work/build/$id"
    ln -s "$target/debug/${ids[$id]}" "$work/build/$id/bootstrap"
done
"$PY" scripts/release-package.py "$work/build" "$work/x86"
if out=$(scripts/release-check.sh --zips-only "$work/x86" 2>&1); then
    echo "$out"; echo "test-release: x86_64 bootstraps were accepted"; exit 1
fi
for fn in "${ids[@]}"; do
    grep -q "FAIL $fn.zip: aarch64 bootstrap within size" <<<"$out" || { echo "$out"; echo "test-release: $fn.zip not refused"; exit 1; }
done
grep -q "not a 64-bit aarch64 ELF" <<<"$out" || { echo "$out"; exit 1; }
grep -q "^ok   SHA256SUMS" <<<"$out" || { echo "$out"; echo "test-release: the checksums of a fresh package do not match"; exit 1; }
# A zip changed after packaging no longer matches its checksum.
echo tampered >> "$work/x86/allocate.zip"
out=$(scripts/release-check.sh --zips-only "$work/x86" 2>&1) || true
grep -q "^FAIL SHA256SUMS" <<<"$out" || { echo "$out"; echo "test-release: a changed zip passed SHA256SUMS"; exit 1; }
# A bootstrap over the deployable size is refused (the limit lowered to the debug binary's).
out=$(MAX_BOOTSTRAP_BYTES=1000 scripts/release-check.sh --zips-only "$work/x86" 2>&1) || true
grep -q "over what Lambda deploys" <<<"$out" || { echo "$out"; echo "test-release: an oversized bootstrap passed"; exit 1; }
echo "test-release: the packaged template validates; x86_64 bootstraps, an oversized one and a changed zip are refused"
