# distloop: `make run` runs the showcase, `make test` runs lint, types and tests.
# Both set up everything they need from nothing: a virtualenv, the package, redis-server.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: run test test-faults load lint typecheck-tree perf scale install redis clean

# pip -qq shows errors only (not the same warnings on every run, e.g. about a host's pip
# configuration); PYTHONWARNINGS: setuptools' build backend warns about editable installs.
install: redis
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -qq --disable-pip-version-check --upgrade pip
	@PYTHONWARNINGS=ignore $(PY) -m pip install -qq --disable-pip-version-check -e '.[dev]'

# redis-server is needed for the embedded cluster and the integration tests.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (Debian package)"; \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	    status=$$?; rm -f /usr/sbin/policy-rc.d; exit $$status; \
	  else \
	    echo "redis-server is missing: install it (sudo apt-get install redis-server) and run make again" >&2; exit 1; \
	  fi; }

# The showcase: the seed workload on every backend, side by side, on the embedded cluster.
run: install
	$(BIN)/distloop bench distloop.tasks.demo:calc_stuff --range 0:2000 --plot bench-calc_stuff.png

# Performance targets, measured as ratios in one run (not part of make test: timings are noisy).
perf: install
	$(PY) -m tests.perf

# mypy cannot follow the editable install's import hook: give it the package as it is
# installed, distloop/ with tasks/ and worker/ inside, as symbolic links.
typecheck-tree:
	@rm -rf build/typecheck && mkdir -p build/typecheck/distloop
	@for f in producer/*; do ln -s ../../../$$f build/typecheck/distloop/; done
	@ln -s ../../../tasks build/typecheck/distloop/tasks && ln -s ../../../worker build/typecheck/distloop/worker

lint: install typecheck-tree
	$(BIN)/ruff check tasks worker producer tests
	$(BIN)/ruff format --check tasks worker producer tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -m "not faults"

# Fault tests kill workers, Redis and producers mid-job: slower, run by .ci/run too.
test-faults: install
	$(BIN)/pytest -m faults

# 100,000 chunks through real workers; prints producer and Redis memory (minutes).
load: install
	$(PY) -m tests.load_check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Scale simulation across network namespaces (root only): the table in the README.
scale: install
	$(PY) -m tests.multihost_scale
	$(PY) -m tests.multihost_scale --workload async
