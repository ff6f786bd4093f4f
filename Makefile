# Two commands on a fresh clone:  `make demo`  and  `make test`.  Both idempotent.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test lint bench gpu-bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	# Test-only helpers whose metadata asks for torchvision (multi-GB here): no deps.
	$(BIN)/pip install -q --no-deps spandrel==0.4.2 lpips==0.1.4
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/twostage demo --out runs/demo

test: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

bench: setup
	$(BIN)/python benchmarks/run.py --write BENCHMARKS.md

clean:
	rm -rf $(VENV) runs
