# OAR Live: the two set-up commands of the README (`make iso`, `make test`) install what they
# need on a fresh Debian 12 machine (apt packages when missing, the Python package in a venv).

VENV     ?= .venv
PYTHON   ?= python3
RECIPE   ?= recipes/debian-trixie-x86_64-oar-2.6-iso.yaml
BUILD_ARGS ?=
PYTEST_ARGS ?=

# The host packages of each set-up, one list each beside what needs it (a package a line, then
# what is used from it): recipes/host.txt for a build (bootstrap/check_host_tools reads it too),
# tests/host.txt and bench/host.txt for what the tests and benchmarks add. Add a package there.
host_debs = $(shell awk '$$1 !~ /^(\#|$$)/ { print $$1 }' $(1))
BUILD_DEBS = $(call host_debs,recipes/host.txt)
TEST_DEBS = $(BUILD_DEBS) $(call host_debs,tests/host.txt)
BENCH_DEBS = $(TEST_DEBS) $(call host_debs,bench/host.txt)

.PHONY: iso test e2e-images test-cluster test-rest unit lint bench host-build-deps host-test-deps host-bench-deps venv clean

define apt_missing
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing host packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

host-build-deps:
	$(call apt_missing,$(BUILD_DEBS))

# tests/test_host.py checks every list against its packages: the tests install the benchmarks'
# two small packages too.
host-test-deps:
	$(call apt_missing,$(BENCH_DEBS))

host-bench-deps:
	$(call apt_missing,$(BENCH_DEBS))

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Build the default OAR live ISO (oar-live.iso and its manifest land in out/).
iso: host-build-deps venv
	$(VENV)/bin/build-iso $(RECIPE) $(BUILD_ARGS)

# The whole test suite: unit, integration (real bash, chroot, mmdebstrap, PostgreSQL, OAR)
# and end-to-end (build the ISO, boot it under qemu) on the default (trixie) image; then, on the
# bookworm image, its boots from the ISO (BIOS; Secure Boot with the solo job) and a 2-node
# cluster job. Both images are built first (E2E_OUT), then two streams run side by side, each a
# chain of VMs whose critical path mostly waits on one emulated CPU: the trixie 3-VM cluster
# scenarios (the longest, ~45 min under load), and everything else (unit and integration
# tests, the image boots, netboot, reproducibility, then bookworm's boots and 2-node job).
# On CI (CI=true) a skipped test fails.
SKIPS = $(if $(filter true,$(CI)),--skips-fail)
E2E_OUT ?= /var/tmp/oar-live-e2e
TRIXIE = recipes/debian-trixie-x86_64-oar-2.6-iso.yaml
BOOKWORM = recipes/debian-bookworm-x86_64-oar-2.5-iso.yaml
PYTEST = $(VENV)/bin/pytest $(SKIPS)

test: host-test-deps venv lint e2e-images
	$(MAKE) -j2 --output-sync=target test-cluster test-rest

e2e-images: venv
	rm -rf $(E2E_OUT) && mkdir -p $(E2E_OUT)/trixie $(E2E_OUT)/bookworm
	cd $(E2E_OUT)/trixie && $(CURDIR)/$(VENV)/bin/build-iso $(CURDIR)/$(TRIXIE) \
		--set output=iso,tgz,qcow2 --set out_dir=$(E2E_OUT)/trixie
	cd $(E2E_OUT)/bookworm && $(CURDIR)/$(VENV)/bin/build-iso $(CURDIR)/$(BOOKWORM) \
		--set output=iso --set out_dir=$(E2E_OUT)/bookworm

test-cluster:
	OAR_LIVE_OUT=$(E2E_OUT)/trixie $(PYTEST) --basetemp=$(E2E_OUT)/tmp-cluster \
		--durations=20 -m e2e tests/e2e/test_cluster.py $(PYTEST_ARGS)

test-rest:
	OAR_LIVE_OUT=$(E2E_OUT)/trixie $(PYTEST) --basetemp=$(E2E_OUT)/tmp-rest --durations=30 \
		--ignore=tests/e2e/test_cluster.py $(PYTEST_ARGS)
	OAR_LIVE_IMAGE=bookworm OAR_LIVE_OUT=$(E2E_OUT)/bookworm $(PYTEST) \
		--basetemp=$(E2E_OUT)/tmp-rest-bookworm --durations=5 -m e2e \
		tests/e2e/test_image.py -k iso_boots $(PYTEST_ARGS)
	OAR_LIVE_IMAGE=bookworm OAR_LIVE_OUT=$(E2E_OUT)/bookworm $(PYTEST) \
		--basetemp=$(E2E_OUT)/tmp-cluster-bookworm --durations=5 -m e2e \
		tests/e2e/test_cluster.py -k two_nodes $(PYTEST_ARGS)

unit: venv
	$(VENV)/bin/pytest -m 'not integration and not e2e' $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check builder autoconf boot tests bench

bench: host-bench-deps venv
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
