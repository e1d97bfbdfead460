# The commands of README.md. Each works on a fresh machine with Rust and Python 3.
.PHONY: demo test faults fidelity release

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

faults:
	bash scripts/faults.sh

# Not part of `test`: installs Esri's arcgis package (~600 MB) into target/fidelity-venv.
fidelity:
	bash scripts/fidelity.sh

# Deploy without Rust: arm64 zips, SHA256SUMS and a packaged template in dist/ (needs the
# aarch64 standard library; ~15 min cold on 2 cores). See infra/README.md.
release:
	bash scripts/release.sh
