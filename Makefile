# taskq: the project's one entry point.
#   make install     .venv with the package (editable) and the test tools
#   make demo        run examples/quickstart/demo.py (no servers needed)
#   make test        unit + integration tests (installs redis/rabbitmq from Debian if missing;
#                    PYTEST_JOBS=2 processes, PYTEST_ARGS='...' for pytest)
#   make bench       taskq vs Celery 5.7 benchmark (BROKER=redis|amqp|both QUICK=1 BENCH_ARGS=...)
#   make screenshots the dashboard's browser tests, saving docs/img/dashboard-*.png
#   make test-cluster the slow cluster scenarios (a 3-node RabbitMQ cluster: F21)
#   make lint | typecheck | format | clean

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
SRC := taskq tests examples benchmarks docs/api_reference.py

# Debian packages the integration tests start privately (tests/servers.py).
SYSTEM_PACKAGES := redis-server rabbitmq-server
# Debian packages the dashboard's browser tests drive (tests/browser: headless Chromium).
BROWSER_PACKAGES := chromium chromium-driver

.PHONY: test-cluster bench-scaling help install system-deps _apt _stop_services demo test lint typecheck format clean bench docs \
	screenshots

help:
	@echo "targets: install demo test lint typecheck format clean  (PYTEST_ARGS='...' for pytest)"
	@echo "         bench  (BROKER=redis|amqp|both QUICK=1 BENCH_ARGS='--reps 5 --only main')"
	@echo "         screenshots  (the dashboard's pages into docs/img)"
	@echo "         test-cluster  (the slow cluster scenarios, left out of make test)"
	@echo "         bench-scaling  (broker cost of 1-100 workers: BROKER=redis|amqp)"

install: $(STAMP)

# Re-runs only when pyproject.toml changes (or the venv is gone).
$(STAMP): pyproject.toml
	@if ! $(BIN)/python -m pip --version >/dev/null 2>&1; then \
	  rm -rf $(VENV); \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    echo ">> '$(PYTHON) -m venv' failed; installing Debian's python3-venv"; \
	    rm -rf $(VENV); \
	    $(MAKE) --no-print-directory _apt APT_PACKAGES=python3-venv; \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# Install redis-server and rabbitmq-server if either is missing, without leaving
# Debian's system services running: a temporary policy-rc.d (only if none exists)
# stops the packages' postinst from starting them, and they are stopped afterwards
# anyway. The tests start their own servers on free loopback ports. Chromium and its
# driver (the dashboard's browser tests) come the same way when either is missing.
system-deps:
	@servers=""; browser=""; \
	{ [ -x /usr/bin/redis-server ] || command -v redis-server >/dev/null 2>&1; } \
	  || servers="$$servers redis-server"; \
	{ [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || [ -x /usr/sbin/rabbitmq-server ]; } \
	  || servers="$$servers rabbitmq-server"; \
	[ -x /usr/bin/chromium ] || browser="$$browser chromium"; \
	[ -x /usr/bin/chromedriver ] || browser="$$browser chromedriver"; \
	packages=""; \
	[ -z "$$servers" ] || packages=" $(SYSTEM_PACKAGES)"; \
	[ -z "$$browser" ] || packages="$$packages $(BROWSER_PACKAGES)"; \
	if [ -n "$$packages" ]; then \
	  echo ">> missing:$$servers$$browser; installing$$packages from Debian"; \
	  $(MAKE) --no-print-directory _apt APT_PACKAGES="$$packages" \
	    STOP_SERVICES=$$([ -z "$$servers" ] || echo 1); \
	fi

# Internal: apt-get install $(APT_PACKAGES) as root (sudo when not root).
_apt:
	@if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "!! need root to install Debian packages: $(APT_PACKAGES)"; \
	     echo "!! run as root: apt-get update && apt-get install -y --no-install-recommends $(APT_PACKAGES)"; \
	     exit 1; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "!! no apt-get here: install $(APT_PACKAGES) with your system's package manager"; exit 1; fi; \
	policy=/usr/sbin/policy-rc.d; made_policy=""; \
	trap '[ -z "$$made_policy" ] || $$sudo rm -f $$policy' EXIT; \
	if [ -n "$(STOP_SERVICES)" ] && ! $$sudo test -e $$policy; then \
	  made_policy=1; \
	  $$sudo sh -c "printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy"; \
	fi; \
	status=0; \
	{ $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
	  && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	} || status=$$?; \
	[ -z "$$made_policy" ] || $$sudo rm -f $$policy; made_policy=""; \
	if [ -n "$(STOP_SERVICES)" ]; then \
	  $(MAKE) --no-print-directory _stop_services sudo="$$sudo"; fi; \
	exit $$status

# Internal: stop Debian's redis/rabbitmq services if (and only if) they run.
# Checked by systemd state or pid file, not with `service ... stop` blindly: the
# rabbitmq init script runs rabbitmqctl, which would start a stray epmd.
_stop_services:
	@for svc in redis-server:/run/redis/redis-server.pid rabbitmq-server:/run/rabbitmq/pid; do \
	  name=$${svc%%:*}; pidfile=$${svc#*:}; \
	  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet $$name 2>/dev/null; then \
	    echo ">> stopping the $$name system service (tests run their own)"; \
	    $(sudo) systemctl stop $$name || true; \
	  elif [ -s $$pidfile ] && $(sudo) kill -0 "$$($(sudo) cat $$pidfile)" 2>/dev/null; then \
	    echo ">> stopping the $$name system service (tests run their own)"; \
	    $(sudo) service $$name stop >/dev/null 2>&1 \
	      || $(sudo) /etc/init.d/$$name stop >/dev/null 2>&1 || true; \
	    if [ $$name = rabbitmq-server ] && command -v epmd >/dev/null 2>&1; then \
	      $(sudo) epmd -kill >/dev/null 2>&1 || true; fi; \
	  fi; \
	done

docs: install
	$(BIN)/python docs/api_reference.py

demo: install
	$(BIN)/python examples/quickstart/demo.py

# Two processes: most tests wait on servers, workers and task durations, not the CPU.
# Each process starts its own Redis and RabbitMQ; a file's tests stay in one process.
PYTEST_JOBS ?= 2

test: install system-deps
	$(BIN)/pytest -n $(PYTEST_JOBS) --dist loadfile $(PYTEST_ARGS)

# Tests marked `cluster` (pyproject.toml leaves them out of `make test`): a RabbitMQ
# cluster of three private nodes takes half a minute to form on a 2-core machine.
test-cluster: install system-deps
	$(BIN)/pytest -m cluster -s $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

typecheck: install
	$(BIN)/mypy

format: install
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

# The dashboard's pages in headless Chromium (tests/browser), each test saving its page.
screenshots: install system-deps
	mkdir -p docs/img
	TASKQ_SCREENSHOTS=docs/img $(BIN)/pytest tests/browser -q $(PYTEST_ARGS)

# benchmarks/run.py (docs/performance.md): private Redis/RabbitMQ, taskq from $(VENV),
# Celery 5.7 from a venv of its own, so it never becomes a dependency of taskq.
BROKER ?= redis
QUICK ?=
BENCH_ARGS ?=
BENCH_VENV := benchmarks/.venv-celery
BENCH_CELERY := celery[redis]==5.7.0 packaging>=23

bench: install system-deps
	@if ! $(BENCH_VENV)/bin/python -c 'import importlib.metadata as m, sys, redis, packaging; \
	    sys.exit(m.version("celery") != "5.7.0")' >/dev/null 2>&1; then \
	  echo ">> creating $(BENCH_VENV) with $(BENCH_CELERY) (for the benchmark only)"; \
	  rm -rf $(BENCH_VENV); \
	  $(PYTHON) -m venv $(BENCH_VENV); \
	  $(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	    $(foreach req,$(BENCH_CELERY),'$(req)'); \
	fi
	$(BIN)/python -m benchmarks.run --broker $(BROKER) $(if $(QUICK),--quick) \
	  --celery-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)
	@if [ "$(BROKER)" != amqp ]; then \
	  echo ">> what min_replicas=1 costs a Redis publish (docs/reliability.md)"; \
	  $(BIN)/python -m benchmarks.replicated_publish $(if $(QUICK),1000); fi

# benchmarks/scaling.py (docs/scaling.md): what 1 to 100 idle and busy workers cost the
# broker. Long (minutes per fleet size); BENCH_ARGS='--workers 1,10 --window 10' to shorten.
bench-scaling: install system-deps
	$(BIN)/python -m benchmarks.scaling --broker $(BROKER) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
