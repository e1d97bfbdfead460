# The commands of README.md. Each works on a fresh machine with Rust and Python 3.
.PHONY: demo test faults

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

faults:
	bash scripts/faults.sh
