# Sourced by every script: the environment that keeps tests and demos on this machine.
# Dummy AWS credentials and no instance-metadata probing, so no AWS client ever tries to
# reach an address off loopback; local endpoints are set by whoever starts the emulator.
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export CARGO_TERM_COLOR=never
export PATH="$HOME/.cargo/bin:$PATH"
# The Python tools of this checkout (moto_server, cargo-lambda): scripts/install-tools.sh puts
# them in a virtualenv here, never in the system Python.
export PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools/test/bin:$PATH"
