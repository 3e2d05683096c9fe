# Stride: one entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stride-installed
PYTEST_ARGS ?=
# pytest-xdist processes of `make test` (2 fits a 2-core machine; 0 runs in one process)
TEST_WORKERS ?= 2

.PHONY: help setup test lint demo protos lock clean course triton-client triton-server kserve-peer bench bench-quick docs-figures soak fuzz

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=25.1'
	$(PY) -m pip install -q -e '.[train,analysis]' --group dev
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install Stride with its extras and the dev tools

# tritonclient 2.41.0 is the last release that ships perf_analyzer; it needs protobuf < 5,
# so it lives in its own venv (the interop and client-compatibility tests run it in a
# subprocess). [http] is tritonclient.http's geventhttpclient and aiohttp.
TRITON_VENV ?= .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.stride-installed

$(TRITON_STAMP):
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q 'tritonclient[grpc,http]==2.41.0' 'protobuf>=4.21,<5' \
		numpy nvidia-cuda-runtime-cu12
	@ldconfig -p | grep -q libb64.so.0d || { [ "$$(id -u)" = 0 ] && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q libb64-0d >/dev/null || \
		  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libb64-0d >/dev/null; }; }; } || \
		echo "note: libb64-0d is missing (needs root); the perf_analyzer tests will skip"
	touch $(TRITON_STAMP)

triton-client: $(TRITON_STAMP) ## tritonclient + perf_analyzer in .venv-triton (interop tests, bench)

# Real NVIDIA Triton (tritonserver and its Python backend, from the nvidia-pytriton wheel): the
# reference the conformance suite diffs against and a peer in `make bench` (bench/triton_peer.py).
# Its own venv; fails soft: without it those tests and bench rows skip and say why.
PYTRITON_VENV ?= .venv-pytriton
PYTRITON_STAMP := $(PYTRITON_VENV)/.stride-installed

$(PYTRITON_STAMP):
	@{ { test -x $(PYTRITON_VENV)/bin/python || $(PYTHON) -m venv $(PYTRITON_VENV); } && \
	  $(PYTRITON_VENV)/bin/python -m pip install -q 'nvidia-pytriton==0.7.0' onnxruntime numpy && \
	  touch $(PYTRITON_STAMP); } || \
	  echo "note: nvidia-pytriton could not be installed; the Triton conformance tests and bench rows will skip"

triton-server: $(PYTRITON_STAMP) ## Real Triton from nvidia-pytriton in .venv-pytriton (conformance tests, bench)

# KServe 0.21: its model server is the peer in `make bench`, its own REST and gRPC clients run
# in the client-compatibility tests. Its own venv (it pins protobuf/gRPC); fails soft: without
# it those tests and bench rows skip and say why.
KSERVE_VENV ?= .venv-kserve
KSERVE_STAMP := $(KSERVE_VENV)/.stride-installed

$(KSERVE_STAMP):
	@{ { test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV); } && \
	  $(KSERVE_VENV)/bin/python -m pip install -q 'kserve==0.21.0' onnxruntime numpy && \
	  touch $(KSERVE_STAMP); } || \
	  echo "note: kserve could not be installed; the KServe client-compatibility tests and bench rows will skip"

kserve-peer: $(KSERVE_STAMP) ## KServe 0.21 in .venv-kserve (the peer in make bench, the client-compatibility tests)

GPU ?=
BENCH_GPU = $(if $(filter 1 yes true,$(GPU)),--gpu)
SOAK_MINUTES ?= 10
FUZZ_SECONDS ?= 300

bench: $(STAMP) $(TRITON_STAMP) $(PYTRITON_STAMP) ## Every benchmark, one table, JSON in results/, then docs-figures (GPU=1: CUDA; 15-25 min)
	@$(MAKE) --no-print-directory kserve-peer || echo "note: KServe not installable; peer skipped"
	$(PY) bench/run.py $(BENCH_GPU); status=$$?; $(MAKE) --no-print-directory docs-figures; exit $$status

bench-quick: $(STAMP) $(TRITON_STAMP) $(PYTRITON_STAMP) ## The short version of make bench (1-2 min)
	$(PY) bench/run.py --quick $(BENCH_GPU)

soak: $(STAMP) $(TRITON_STAMP) ## stride serve with its model swapped; then stride serve and serve-analysis as deploy/ runs them, under attack (3 x SOAK_MINUTES)
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES) --json results/soak.json

fuzz: $(STAMP) ## Every atheris harness for FUZZ_SECONDS each (300); corpora in results/fuzz
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS)

# Only the standard library: no venv needed to render the tables.
docs-figures: ## The tables of README.md and docs/performance.md from results/bench-*.json
	$(PYTHON) tools/docs_figures.py
	@git --no-pager diff --stat -- README.md docs/performance.md 2>/dev/null || true

test: $(STAMP) $(TRITON_STAMP) $(PYTRITON_STAMP) $(KSERVE_STAMP) ## Run the test suite in TEST_WORKERS processes (creates .venv first when absent)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy and the import contracts (lint-imports, pyproject.toml)
	$(VENV)/bin/ruff check stride pipeline services runstore tests tools bench fuzz
	$(VENV)/bin/ruff format --check stride pipeline services runstore tests tools bench fuzz
	$(VENV)/bin/mypy stride pipeline services runstore bench fuzz tools tests
	$(VENV)/bin/lint-imports --no-logo

demo: $(STAMP) ## The whole pipeline on the digits: sweep, export, serve, classify, compare (~2 min)
	$(VENV)/bin/stride demo

course: $(STAMP) ## Every experiment of docs/course.md: sweeps, tables (docs/_course), figures (~15 min on 2 CPUs)
	$(VENV)/bin/stride course

protos: $(STAMP) ## Regenerate the Python code for protos/ (pinned grpcio-tools)
	$(PY) tools/gen_protos.py

lock: $(STAMP) ## Re-resolve the image locks in deploy/locks (after changing pyproject.toml)
	$(PY) tools/lock_deps.py

clean: ## Remove caches (keeps .venv, runs/ and repository/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .import_linter_cache build *.egg-info
