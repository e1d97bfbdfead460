# The two commands of README.md. Both work on a fresh machine with Rust and Python 3.
.PHONY: demo test

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh
