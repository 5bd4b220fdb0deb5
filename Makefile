# Everything runs inside .venv; `make run` or `make test` alone sets it up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The CPU build of torch; a looser pin would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup run test lint bench ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

run: setup
	$(BIN)/python -m macs_exp $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

bench: setup
	$(BIN)/python scripts/bench_throughput.py

ui: setup
	mkdir -p outputs
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --port $(or $(PORT),5000)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
