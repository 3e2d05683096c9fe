# Stride: one entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stride-installed
PYTEST_ARGS ?=

.PHONY: help setup test lint demo protos clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=25.1'
	$(PY) -m pip install -q -e '.[train,analysis]' --group dev
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install Stride with its extras and the dev tools

test: $(STAMP) ## Run the test suite (creates .venv first when absent)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy on the packages
	$(VENV)/bin/ruff check stride pipeline services tests tools
	$(VENV)/bin/ruff format --check stride pipeline services tests tools
	$(VENV)/bin/mypy stride pipeline services

demo: $(STAMP) ## Train the default CNN on the bundled digits and report test accuracy
	$(VENV)/bin/stride demo

protos: $(STAMP) ## Regenerate the Python code for protos/ (pinned grpcio-tools)
	$(PY) tools/gen_protos.py

clean: ## Remove caches (keeps .venv, runs/ and repository/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
