# The two commands a newcomer runs: `make run` and `make test`.
# Both install what they need (Debian packages, then a virtualenv in .venv/), idempotently.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= /var/lib/corral
LISTEN ?= 127.0.0.1:8443
PYTEST_ARGS ?=
# The Azure CLI, for tests/integration/test_az_cli.py and `corral az-login`: in its own virtualenv,
# since it pins other versions of the azure-mgmt packages than the project's tests use.
AZ_VENV := .venv-az
AZ_VERSION := 2.91.0
# Byte-compile only what Corral's az commands load (container, network, monitor, cloud, login): a full compile
# doubles the size, none makes every az call compile ~5 s of sources where bytecode writing is off.
AZ_NO_COMPILE := site-packages/(pip|setuptools)/|site-packages/azure/(?!cli/|core/|common/|mgmt/)
AZ_NO_COMPILE := $(AZ_NO_COMPILE)|azure/cli/command_modules/(?!container/|network/|cloud/|profile/|monitor/)
AZ_NO_COMPILE := $(AZ_NO_COMPILE)|azure/mgmt/(?!core/|containerinstance/|resource/)
AZ_NO_COMPILE := $(AZ_NO_COMPILE)|azure/mgmt/resource/.*/v20(?!24_11_01|22_12_01|21_07_01|19_07_01)
# azure-mgmt-containerinstance 10.2.0b2 (ngroups, cg_profile) for tests/conformance/test_sdk_orchestration.py,
# in its own virtualenv: the project's tests keep 10.1.0.
ACI_PREVIEW_VENV := .venv-aci-preview
ACI_PREVIEW_VERSION := 10.2.0b2

# Everything Corral and its tests use on a node.
APT_PACKAGES := crun runc conmon containernetworking-plugins docker-registry busybox-static \
	iptables nftables iproute2 podman skopeo umoci etcd-server glusterfs-server glusterfs-client runsc git openssl curl \
	ca-certificates \
	bind9-dnsutils iputils-ping util-linux python3 python3-venv chromium chromium-driver wrk gcc libc6-dev

.PHONY: run test deps system-packages venv az aci-preview portal lint bench clean-node

run: deps
	$(VENV)/bin/corral up --data-dir $(DATA_DIR) --listen $(LISTEN) --demo

test: deps az aci-preview
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest $(PYTEST_ARGS)

deps: system-packages venv portal

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed $(VENV)/bin/corral-vnet-native $(VENV)/bin/corral-crun-shim $(VENV)/bin/corral-warm-init

# The corral-vnet CNI executable's native fast path (src/corral/net/vnet/install.py says why).
$(VENV)/bin/corral-vnet-native: src/corral/net/vnet/native_client.c $(VENV)/.installed
	$(PY) -m corral.native corral-vnet-native

# How conmon runs crun (src/corral/node/runtime/crun_shim.c says why).
$(VENV)/bin/corral-crun-shim: src/corral/node/runtime/crun_shim.c $(VENV)/.installed
	$(PY) -m corral.native corral-crun-shim

# A warm container's first process (src/corral/node/runtime/warm_init.c says why).
$(VENV)/bin/corral-warm-init: src/corral/node/runtime/warm_init.c $(VENV)/.installed
	$(PY) -m corral.native corral-warm-init

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

az: $(AZ_VENV)/.installed

$(AZ_VENV)/.installed: Makefile
	test -x $(AZ_VENV)/bin/python || python3 -m venv $(AZ_VENV)
	$(AZ_VENV)/bin/python -m pip install -qq --no-compile azure-cli==$(AZ_VERSION)
	$(AZ_VENV)/bin/python -W ignore -m compileall -q -j 0 -x '$(AZ_NO_COMPILE)' \
		$$($(AZ_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null
	touch $@

# The portal's front-end libraries (Pico CSS, xterm.js, Chart.js, js-yaml) from npm, at the lockfile's versions.
PORTAL := src/corral/portal
portal: $(PORTAL)/static/vendor/.built

$(PORTAL)/static/vendor/.built: $(PORTAL)/package-lock.json $(PORTAL)/build.mjs
	cd $(PORTAL) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

aci-preview: $(ACI_PREVIEW_VENV)/.installed

$(ACI_PREVIEW_VENV)/.installed: Makefile
	test -x $(ACI_PREVIEW_VENV)/bin/python || python3 -m venv $(ACI_PREVIEW_VENV)
	$(ACI_PREVIEW_VENV)/bin/python -m pip install -q azure-mgmt-containerinstance==$(ACI_PREVIEW_VERSION) azure-core
	touch $@

lint: venv
	$(VENV)/bin/ruff check src tests bench

bench: deps
	$(PY) bench/start_latency.py

# Remove every group, sandbox and mount Corral left on this node (data kept).
clean-node: venv
	$(VENV)/bin/corral node reset --data-dir $(DATA_DIR)
