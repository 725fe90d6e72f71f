# tiercache: every target sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test bench bench-smoke lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first, pinned to the local CPU wheel, so nothing pulls a CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[model,dev]'
	touch $(STAMP)

install: $(STAMP)

## run: set up, then embed the shipped query log twice with the embedded default config
run: $(STAMP)
	mkdir -p out
	$(BIN)/tiercache embed --input data/queries.txt --passes 2 --output out/embeddings.npy

## test: set up, then run the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

## bench: per-tier latency and footprint beside the baselines -> docs/benchmarks.md
bench: $(STAMP)
	$(BIN)/python bench/run.py --out docs/benchmarks.md

lint: $(STAMP)
	$(BIN)/ruff check tiercache tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) out .tiercache build *.egg-info
