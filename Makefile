# make demo : set up .venv and run the digits demo      make test : set up .venv and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: demo demo-quick test lint setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the exact CPU torch first, so that pyproject's floor (torch>=2.6) is met without a CUDA build
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]' torch==$(TORCH_VERSION)
	# torch-fidelity's FID Inception only: its torchvision dependency has no CPU build for this
	# torch, and the Inception extractor never imports it
	$(BIN)/pip install --quiet --no-deps torch-fidelity==0.4.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/flatgen demo

demo-quick: $(STAMP)
	$(BIN)/flatgen demo --quick

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

clean:
	rm -rf $(VENV) demo demo-quick .pytest_cache
