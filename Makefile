# Two commands on a fresh clone:  `make demo`  and  `make test`.  Both idempotent.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test lint bench gpu-bench gpu-wheels clean

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

# Wheels of what the trainer needs beyond a GPU machine's torch + scikit-image, for Pythons
# 3.10-3.12: benchmarks/gpu.sh installs them offline (carry benchmarks/wheels to the machine).
gpu-wheels: setup
	for v in 3.10 3.11 3.12; do $(BIN)/pip download -q --only-binary=:all: --no-deps \
	    --python-version $$v --platform manylinux2014_x86_64 -d benchmarks/wheels \
	    pyyaml==6.0.2 tqdm==4.70.1 safetensors==0.8.0 pypng==0.20220715.0 || exit 1; done

clean:
	rm -rf $(VENV) runs
