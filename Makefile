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
	@start=$$(date +%s) && \
	{ test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } && \
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools<81' wheel && \
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]" && \
	echo $$(( $$(date +%s) - start )) > $(VENV)/.sparsevision-install-seconds  # shown in the demo report
	@touch $(STAMP)

demo: install
	$(BIN)/sparsevision demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Optional MMDetection backend (vision/models/detection/mmdet_backend.py). PyPI has only mmcv's source:
# tools/build_mmcv.sh builds mmcv 2.1.0 with its ops for the installed torch (~30 CPU-minutes the first time,
# then a cached wheel), then the sparsevision[mmdet] extra goes in. mmengine requires opencv-python (GUI),
# which overwrites the cv2/ of albumentations' opencv-python-headless: it is removed and headless reinstalled.
MMDET_STAMP := $(VENV)/.sparsevision-mmdet-installed

.PHONY: mmdet test-mmdet

mmdet: install $(MMDET_STAMP)

$(MMDET_STAMP): $(STAMP) pyproject.toml constraints.txt tools/build_mmcv.sh
	MAX_JOBS=$${MAX_JOBS:-2} bash tools/build_mmcv.sh $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,mmdet]"
	@if $(BIN)/python -m pip show opencv-python >/dev/null 2>&1; then \
		$(BIN)/python -m pip uninstall -q -y opencv-python && \
		$(BIN)/python -m pip install -q -c constraints.txt --no-deps --force-reinstall opencv-python-headless; fi
	$(BIN)/python -c "import albumentations, cv2, mmcv.ops, mmdet; print('mmdet', mmdet.__version__, '| mmcv', mmcv.__version__, '| cv2', cv2.__version__)"
	@touch $@

test-mmdet: mmdet
	$(BIN)/python -m pytest tests/models/test_mmdet_backend.py $(PYTEST_ARGS)
