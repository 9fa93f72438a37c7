# agentshim: `make demo` and `make test` are the whole set-up on a fresh Debian 12 machine (root).
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo test test-host test-vm lint clean

setup:  ## install and configure everything (idempotent)
	bash packaging/setup-host.sh

demo: setup  ## the embedded demo (until the replay demo lands: what this host can do)
	$(VENV)/bin/agentshim doctor

test: setup  ## every tier: host (hybrid here) and the pure-v2 VM; each reports its counts
	$(PY) tests/run_tiers.py --tier all

test-host: setup
	$(PY) tests/run_tiers.py --tier host

test-vm: setup
	$(PY) tests/run_tiers.py --tier vm

lint:
	$(VENV)/bin/ruff check agentshim tests

clean:
	rm -rf build .pytest_cache
