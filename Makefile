# The README's two commands: `make demo` and `make test`. Each sets up what it needs, idempotently:
# Debian packages (tools/install_system_deps.sh), a project virtualenv in .venv, and the package with
# pinned versions from constraints.txt (torch/torchvision come from pip's local wheels here).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sparsevision-installed
PYTEST_ARGS ?=

.PHONY: demo test lint system install

install: system $(STAMP)

system:
	@bash tools/install_system_deps.sh

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools<81' wheel
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(BIN)/sparsevision demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
