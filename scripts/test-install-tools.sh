#!/usr/bin/env bash
# Checks that scripts/install-tools.sh works where the system Python is externally managed
# (PEP 668: Debian 12, Ubuntu 24.04), where `pip install` outside a virtualenv fails with
# "externally-managed-environment". The interpreter handed to the script is a wrapper that
# refuses exactly that, as such a system does; everything else goes to the real python3.
# Runs in a temporary directory, so it installs into a fresh virtualenv every time.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
real=$(command -v python3)
cat > "$work/python3" <<WRAPPER
#!/bin/sh
# A system Python marked externally managed: pip may not install into it.
if [ "\$1" = "-m" ] && [ "\$2" = "pip" ] && [ "\$3" = "install" ]; then
    echo "error: externally-managed-environment" >&2
    exit 1
fi
exec "$real" "\$@"
WRAPPER
chmod +x "$work/python3"
# The wrapper refuses a system install, so this test can fail.
if "$work/python3" -m pip install --quiet nothing-to-install 2>/dev/null; then
    echo "test-install-tools: the externally managed Python accepted pip install" >&2
    exit 1
fi
# First on PATH too: a script calling python3 itself meets the same refusal.
PATH="$work:$PATH" PYTHON="$work/python3" TOOLS_DIR="$work/tools" scripts/install-tools.sh
for tool in moto_server cargo-lambda; do
    [ -x "$work/tools/bin/$tool" ] || { echo "test-install-tools: $tool was not installed" >&2; exit 1; }
done
"$work/tools/bin/python" -m pip show moto cargo-lambda 2>/dev/null | awk '/^(Name|Version):/{printf "%s ", $2} END {print ""}'
echo "install-tools: ok on an externally managed system Python"
