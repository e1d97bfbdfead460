#!/usr/bin/env bash
# After `scripts/infra-build.sh` (sam build, arm64): starts each built aarch64 `bootstrap` under
# qemu-user and the Lambda Runtime API emulator, and checks it answers an invocation. The event
# is deliberately invalid, so the check needs no ArcGIS, Secrets Manager or DynamoDB: a function
# that started, polled the Runtime API, decoded the event and reported a typed error passes.
# Not part of `make test` (the arm64 build takes ~15 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
build=${BUILD_DIR:-.aws-sam/build}
# qemu-user runs aarch64 binaries here; the cross glibc gives them their dynamic loader.
if ! command -v qemu-aarch64-static >/dev/null || [ ! -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
    apt-get update -qq && apt-get install -y -qq qemu-user-static libc6-arm64-cross libgcc-s1-arm64-cross
fi
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cargo lambda watch --only-lambda-apis --quiet -A 127.0.0.1 -P "$port" >/dev/null 2>&1 &
watch=$!
pids=()
trap 'kill "$watch" "${pids[@]}" 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

failed=0
for pair in ScanCreditsFunction:scan-credits:'{"dryrun":true}' MonthlyReportFunction:monthly-report:'{"month":"2026-13"}' AllocateFunction:allocate:@tests/fixtures/apigw-v2-allocations-anonymous.json AllocationJobsFunction:allocation-jobs:'{"Records":[{"messageId":"m1","body":"{}"}]}'; do
    id=${pair%%:*}; rest=${pair#*:}; name=${rest%%:*}; event=${rest#*:}
    bin="$build/$id/bootstrap"
    file "$bin" | grep -q "ARM aarch64" || { echo "FAIL $name: $bin is not an aarch64 executable"; failed=1; continue; }
    env -i PATH="$PATH" QEMU_LD_PREFIX="$QEMU_LD_PREFIX" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
        AWS_EC2_METADATA_DISABLED=true AWS_ENDPOINT_URL=http://127.0.0.1:9 \
        ARCGIS_SECRET_ID=smoke LEDGER_TABLE=smoke REPORT_BUCKET=smoke \
        AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt/$name" AWS_LAMBDA_FUNCTION_NAME="$name" \
        AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 \
        qemu-aarch64-static "$bin" >"/tmp/smoke-$name.log" 2>&1 &
    pids+=($!)
    out=$(curl -s -m 60 -X POST "http://127.0.0.1:$port/2015-03-31/functions/$name/invocations" -d "$event" || true)
    size=$(stat -c %s "$bin")
    if [ -n "$out" ]; then
        echo "ok   $name ($(numfmt --to=iec "$size") aarch64 bootstrap) answered: ${out:0:160}"
    else
        echo "FAIL $name: no answer"; cat "/tmp/smoke-$name.log"; failed=1
    fi
done
exit $failed
