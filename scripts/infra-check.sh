#!/usr/bin/env bash
# Offline validation of the SAM application in infra/ (part of `make test`). Needs Python 3 and
# PyPI on a fresh machine (scripts/infra-tools.sh installs the pinned tools); no AWS account,
# no Docker, nothing off loopback.
#
#   1. cfn-lint 1.58 with the project's rules (infra/lint-rules, E9001-E9007)
#   2. sam validate --lint, and sam validate (the SAM transform itself)
#   3. checkov on the template, and on its SAM translation: 0 failed checks; accepted
#      exceptions are skipped in the template with a reason (Metadata: checkov: skip)
#   4. the drift test (scripts/infra-drift.py) on a hand-written manifest, a negative one,
#      and the shared crate's real manifest when its example exists: variables, schedule
#      inputs, parameter constraints against the values the code accepts, and the metrics
#      the alarms and the dashboard read
#   5. the mutation test (infra/tests/mutation_test.py)
#   6. the variants test (infra/tests/variants_test.py): the template resolved for each
#      optional feature off and on (alarm topic, VPC, permissions boundary, JWT API)
#
# Prints one line per check and ends with `infra-check: N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0 CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE
export PATH="$HOME/.cargo/bin:$PATH"

scripts/infra-tools.sh || { echo "infra-check: could not install the tools"; exit 1; }
SAM=infra/.tools/sam/bin
CHECKOV=infra/.tools/checkov/bin/checkov
PY=$SAM/python
TEMPLATE=infra/template.yaml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
failures=()

# check NAME COMMAND...: runs it, shows its output, counts it.
check() {
    local name=$1; shift
    echo "== infra: $name"
    echo "   \$ $*"
    if "$@" > "$work/out" 2>&1; then
        sed 's/^/   /' "$work/out"
        echo "   ok"
        passed=$((passed + 1))
    else
        sed 's/^/   /' "$work/out"
        echo "   FAILED: $name"
        failed=$((failed + 1))
        failures+=("$name")
    fi
}

# expect_drift FILE: the negative manifest must fail, naming each planted difference.
expect_drift() {
    local out
    if out=$("$PY" scripts/infra-drift.py "$1" 2>&1); then
        echo "$out"; echo "the drift test accepted a manifest that disagrees with the template"; return 1
    fi
    echo "$out"
    local missing=0 want
    for want in "env AUTO_TOP_UP_TO is set by the template but the function does not read it" \
                "env AUTO_TOP_UP_CREDITS is read by the function" \
                "Input key 'dry_run' is not accepted" \
                "Input key 'scheduled_time' is a string" \
                "notify: in the manifest but the template has no function" \
                "parameter MaxMembersPerRequest (MAX_MEMBERS_PER_REQUEST) refuses '2001', which the code accepts" \
                "parameter MaxMembersPerRequest (MAX_MEMBERS_PER_REQUEST) accepts '5', which the code refuses" \
                "parameter LogLevel (AWS_LAMBDA_LOG_LEVEL) allows 'TRACE', which is not a value the code accepts" \
                "alarm MembersCriticalAlarm: CreditSteward/MembersCritical is not a metric the functions publish" \
                "dashboard Dashboard: CreditSteward/ArcgisRequests is not a metric the functions publish"; do
        grep -qF "$want" <<<"$out" || { echo "not reported: $want"; missing=1; }
    done
    return $missing
}

# The SAM translation must succeed for checkov to read it; a failure shows in the check below.
translate() { "$PY" infra/tests/infra_lib.py translate "$TEMPLATE" "$work/translated.json"; }

check "cfn-lint (with infra/lint-rules)" "$SAM/cfn-lint" "$TEMPLATE" --append-rules infra/lint-rules
check "sam validate --lint" "$SAM/sam" validate --lint -t "$TEMPLATE"
check "sam validate (SAM transform)" "$SAM/sam" validate -t "$TEMPLATE" --region us-east-1
check "checkov" "$CHECKOV" -f "$TEMPLATE" --framework cloudformation --quiet --compact --skip-download
check "SAM translation for checkov" translate
check "checkov (SAM-translated template)" "$CHECKOV" -f "$work/translated.json" --framework cloudformation --quiet --compact --skip-download
check "drift: example manifest agrees" "$PY" scripts/infra-drift.py infra/tests/manifest.example.json
check "drift: negative manifest is rejected" expect_drift infra/tests/manifest.drift.json
if [ -f shared/examples/manifest.rs ]; then
    real_drift() { cargo run -q --locked -p shared --example manifest | "$PY" scripts/infra-drift.py -; }
    check "drift: the shared crate's manifest agrees" real_drift
else
    echo "== infra: drift against the shared crate's manifest skipped (shared/examples/manifest.rs does not exist yet)"
fi
check "mutation test" "$PY" infra/tests/mutation_test.py --checkov "$CHECKOV"
check "variants test" "$PY" infra/tests/variants_test.py --checkov "$CHECKOV"

if [ "$failed" -gt 0 ]; then
    printf 'infra-check: failed: %s\n' "${failures[@]}"
fi
echo "infra-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
