# The two commands a newcomer runs: `make run` and `make test`.
# Both install what they need (Debian packages, then a virtualenv in .venv/), idempotently.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= /var/lib/corral
LISTEN ?= 127.0.0.1:8443
PYTEST_ARGS ?=

# Everything Corral and its tests use on a node.
APT_PACKAGES := crun runc conmon containernetworking-plugins docker-registry busybox-static \
	iptables iproute2 podman skopeo umoci etcd-server runsc git openssl curl ca-certificates \
	bind9-dnsutils iputils-ping util-linux python3 python3-venv

.PHONY: run test deps system-packages venv lint bench clean-node

run: deps
	$(VENV)/bin/corral up --data-dir $(DATA_DIR) --listen $(LISTEN) --demo

test: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest $(PYTEST_ARGS)

deps: system-packages venv

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check src tests bench

bench: deps
	$(PY) bench/start_latency.py

# Remove every group, sandbox and mount Corral left on this node (data kept).
clean-node: venv
	$(VENV)/bin/corral node reset --data-dir $(DATA_DIR)
