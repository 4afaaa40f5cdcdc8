# EcoSort developer entry points. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else a private copy bootstrapped with pip (a fresh laptop has Python, not uv).
BOOTSTRAP := .bootstrap
UV ?= $(shell command -v uv 2>/dev/null || echo $(BOOTSTRAP)/bin/uv)
PYTHON ?= python3

.PHONY: help install run stop test lint typecheck test-py lint-k8s train-head eval-search clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BOOTSTRAP)/bin/uv:
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/pip install --quiet 'uv==0.13.9'

install: $(UV)  ## install every package of the workspace from uv.lock
	$(UV) sync --frozen

run: install  ## start the whole local stack (Ctrl-C stops it)
	$(UV) run --frozen ecosort-stack up

stop:  ## stop a stack started in another terminal
	$(UV) run --frozen ecosort-stack down

test: install lint typecheck lint-k8s test-py  ## linters, type checks, manifests, then the whole test suite

lint: install  ## ruff
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: install  ## mypy over every package
	$(UV) run --frozen mypy libs/common/src services/*/src tools/*/src

test-py: install  ## pytest over every package and the cross-service tests
	$(UV) run --frozen pytest -n 2 --dist loadgroup libs services tools tests

lint-k8s: install  ## render and validate charts, manifests, Dockerfiles and skaffold offline
	$(UV) run --frozen python -m ecosort_k8scheck

train-head: install  ## retrain the classifier head from the shared photos and stored corrections
	$(UV) run --frozen ecosort-stack exec waste -- python -m ecosort_waste train-head $(ARGS)

eval-search: install  ## top-1 accuracy of recycling item search over the query set
	$(UV) run --frozen python -m ecosort_recycling eval-search $(ARGS)

# A running stack is stopped first: its servers would otherwise run on, on deleted files,
# holding every port, with no state file left for `make stop` to find them by.
clean:  ## stop the local stack, then remove the virtual environment and the stack's data
	if [ -f .local/stack.json ] && [ -x .venv/bin/ecosort-stack ]; then \
		ECOSORT_STACK_HOME=$(CURDIR)/.local .venv/bin/ecosort-stack down; fi
	rm -rf .venv $(BOOTSTRAP) .local
