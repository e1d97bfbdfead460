#!/usr/bin/env bash
# Checks a release folder deploys as it is:
#   - the packaged template passes cfn-lint (with infra/lint-rules), sam validate --lint and
#     checkov, as infra/template.yaml does;
#   - unless --template-only: every zip holds exactly one executable `bootstrap`, an aarch64
#     ELF within what Lambda deploys (MAX_BOOTSTRAP_BYTES, MAX_ZIP_BYTES; default 250 MB
#     unzipped and 50 MB zipped), and SHA256SUMS matches. Each size is also shown against the
#     project's targets (TARGET_BOOTSTRAP_BYTES, TARGET_ZIP_BYTES: 6 MB and 2.5 MB), which are
#     reported, not enforced: a release over them still deploys.
#
#   scripts/release-check.sh [--template-only | --zips-only] DIR
set -uo pipefail
cd "$(dirname "$0")/.."
template=1 zips=1
case "${1:-}" in
    --template-only) zips=0; shift ;;
    --zips-only) template=0; shift ;;
esac
dir=${1:?usage: $0 [--template-only | --zips-only] DIR}

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0 CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE
scripts/infra-tools.sh >/dev/null || { echo "release-check: could not install the tools"; exit 1; }
SAM=infra/.tools/sam/bin
CHECKOV=infra/.tools/checkov/bin/checkov

failed=0
check() {
    local name=$1; shift
    if out=$("$@" 2>&1); then
        echo "ok   $name"
        [ -n "$out" ] && [ "${VERBOSE_OK:-1}" = 1 ] && sed 's/^/     /' <<<"$out" | tail -n 3
    else
        echo "FAIL $name"; sed 's/^/     /' <<<"$out"; failed=1
    fi
}
if [ "$template" -eq 1 ]; then
    check "packaged template: cfn-lint" "$SAM/cfn-lint" "$dir/template.yaml" --append-rules infra/lint-rules
    check "packaged template: sam validate --lint" "$SAM/sam" validate --lint -t "$dir/template.yaml"
    check "packaged template: checkov" "$CHECKOV" -f "$dir/template.yaml" --framework cloudformation --quiet --compact --skip-download
    check "packaged template: no build step left" bash -c "! grep -nE 'BuildMethod|\\.\\./functions' '$dir/template.yaml'"
fi
if [ "$zips" -eq 1 ]; then
    check "SHA256SUMS" bash -c "cd '$dir' && sha256sum --check --quiet SHA256SUMS"
    for zip in "$dir"/*.zip; do
        check "$(basename "$zip"): aarch64 bootstrap within size" "$SAM/python" - "$zip" \
            "${MAX_BOOTSTRAP_BYTES:-250000000}" "${MAX_ZIP_BYTES:-50000000}" \
            "${TARGET_BOOTSTRAP_BYTES:-6000000}" "${TARGET_ZIP_BYTES:-2500000}" <<'PY'
import os, stat, struct, sys, zipfile
path, max_bootstrap, max_zip, target_bootstrap, target_zip = sys.argv[1], *map(int, sys.argv[2:6])
with zipfile.ZipFile(path) as z:
    names = z.namelist()
    if names != ["bootstrap"]:
        sys.exit(f"{path} holds {names}, not exactly ['bootstrap']")
    info = z.getinfo("bootstrap")
    data = z.read("bootstrap")
zip_size = os.path.getsize(path)
def against(size, target):
    return f"{size / 1e6:.2f} MB ({'within' if size <= target else 'over'} the {target / 1e6:g} MB target)"
print(f"bootstrap {against(len(data), target_bootstrap)}, zip {against(zip_size, target_zip)}")
problems = []
mode = info.external_attr >> 16
if not stat.S_ISREG(mode) or not mode & 0o111:
    problems.append(f"bootstrap is not an executable file (mode {oct(mode)})")
if data[:4] != b"\x7fELF" or data[4] != 2 or struct.unpack_from("<H", data, 18)[0] != 0xB7:
    problems.append("bootstrap is not a 64-bit aarch64 ELF")
if len(data) > max_bootstrap or zip_size > max_zip:
    problems.append(f"over what Lambda deploys ({max_bootstrap / 1e6:g} MB unzipped, {max_zip / 1e6:g} MB zipped)")
if problems:
    sys.exit("; ".join(problems))
PY
    done
fi
[ "$failed" -eq 0 ] && echo "release-check: $dir deploys as it is" || echo "release-check: $dir has problems"
exit $failed
