# The two commands of the README, and a few more. Each installs what it needs first.
.PHONY: demo test bench down lint setup

setup:
	@bash scripts/bootstrap.sh

# Start the embedded default (MRC + 3 OSDs on loopback) and mount your home volume.
demo: setup
	@.venv/bin/xfs up

# Stop what `make demo` started.
down:
	@.venv/bin/xfs down

# The whole test suite (unit, protocol, real processes, real FUSE mounts).
test: setup
	@bash scripts/test.sh

bench: setup
	@.venv/bin/python bench/fsbench.py

lint: setup
	@.venv/bin/ruff check xfs tests bench && .venv/bin/mypy
