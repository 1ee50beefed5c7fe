# redline — the two commands: `make run` (server on embedded defaults) and `make test` (whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# A local wheel directory (CPU torch) is used when the machine has one.
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := -c constraints.txt $(if $(WHEELS),--find-links $(WHEELS))
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test lint docker-wheels bench bench-cache bench-concurrency bench-serve bench-cluster system-deps venv clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_FLAGS) "torch==2.13.0"
	$(PY) -m pip install -q $(PIP_FLAGS) -e ".[all]"
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

run: $(STAMP)
	$(VENV)/bin/redline serve --host 127.0.0.1 --port 8000

test: $(STAMP) system-deps
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

# The CPU build of torch for deploy/Dockerfile, from the local wheel directory.
docker-wheels:
	mkdir -p deploy/wheels
	@ls $(WHEELS)/torch-2.13.0*.whl >/dev/null 2>&1 || { echo "no CPU torch 2.13.0 wheel in /opt/wheels: put torch-2.13.0+cpu-*.whl (the CPU build) in deploy/wheels/ yourself"; exit 1; }
	cp $(WHEELS)/torch-2.13.0*.whl deploy/wheels/

bench: bench-cache bench-concurrency bench-serve bench-cluster

bench-cache: $(STAMP) system-deps
	$(PY) benchmarks/cache_bench.py
	$(PY) benchmarks/strategies_bench.py

bench-concurrency: $(STAMP)
	$(PY) benchmarks/concurrency_bench.py

bench-serve: $(STAMP) system-deps
	$(PY) benchmarks/serve_bench.py

bench-cluster: $(STAMP) system-deps
	$(PY) benchmarks/cluster_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
