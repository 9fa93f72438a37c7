# agentshim: `make demo` and `make test` are the whole set-up on a fresh Debian 12 machine (root).
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo test test-host test-vm fuzz lint clean wrapper install uninstall bench

setup:  ## install and configure everything (idempotent)
	bash packaging/setup-host.sh

demo: setup  ## the embedded demo: 5 agent tenants under every policy (~3 min), table + plot
	$(VENV)/bin/agentshim demo

bench: setup  ## every benchmark (bench/*.py) -> bench/results.json, bench/results.md
	$(PY) bench/run_all.py

test: setup  ## every tier: host (hybrid here) and the pure-v2 VM; each reports its counts
	$(PY) tests/run_tiers.py --tier all

test-host: setup
	$(PY) tests/run_tiers.py --tier host

test-vm: setup
	$(PY) tests/run_tiers.py --tier vm

fuzz: setup  ## the property tests of tests/fuzz with many examples (HYPOTHESIS_PROFILE=fuzz)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

HOOKS_DIR ?= /usr/share/containers/oci/hooks.d
LIBEXEC ?= /usr/libexec/agentshim

wrapper:  ## the static Bash wrapper
	$(MAKE) -C wrapper

install: setup wrapper  ## wrapper, OCI hooks (pointing at this venv's agentshim), default profile
	install -D -m 0755 wrapper/agentshim-bash $(DESTDIR)$(LIBEXEC)/agentshim-bash
	install -d $(DESTDIR)$(HOOKS_DIR)
	for st in precreate prestart poststop; do \
	  sed "s|@AGENTSHIM@|$(VENV)/bin/agentshim|" hooks/agentshim-$$st.json.in \
	    > $(DESTDIR)$(HOOKS_DIR)/agentshim-$$st.json; done
	test -e $(DESTDIR)/etc/agentshim/profiles/default.yaml || \
	  install -D -m 0644 packaging/profiles/default.yaml $(DESTDIR)/etc/agentshim/profiles/default.yaml
	@echo "installed: podman runs agentshim's hooks for containers with io.agentshim.* annotations"

uninstall:
	rm -f $(DESTDIR)$(LIBEXEC)/agentshim-bash $(DESTDIR)$(HOOKS_DIR)/agentshim-*.json
	-rmdir $(DESTDIR)$(LIBEXEC)

.PHONY: deb rpm

deb: wrapper  ## Debian package: dist/agentshim_<version>_<arch>.deb (packaging/debian/, docs/packaging.md)
	bash packaging/build-deb.sh

rpm:  ## RPM package: dist/agentshim-<version>-1.<arch>.rpm (packaging/rpm/agentshim.spec)
	bash packaging/build-rpm.sh

lint:
	$(VENV)/bin/ruff check agentshim tests

clean:
	rm -rf build .pytest_cache
