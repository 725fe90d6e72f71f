# tiercache: every target sets itself up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test soak bench bench-smoke lint install clean sim-grid redis-server

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first, pinned to the local CPU wheel, so nothing pulls a CUDA build.
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[model,dev]'
	touch $(STAMP)

# The compiled policy core (tiercache/_core_src/*.c, *.h: one extension module,
# tiercache._core), rebuilt in place when any of its sources changes.
CORE     := $(VENV)/.core
CORE_SRC := $(sort $(wildcard tiercache/_core_src/*.c tiercache/_core_src/*.h))
$(CORE): $(STAMP) $(CORE_SRC) setup.py
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -c "import tiercache._core"
	@# the extension is optional for pip (a failed compile keeps a stale .so): refuse it
	@# here, unless a .so is newer than every source (than the newest one)
	@newest=$$(ls -t $(CORE_SRC) | head -n 1); \
	test -n "$$(find tiercache -name '_core*.so' -newer "$$newest")" || \
		{ echo "tiercache/_core_src did not compile (pip install -v -e . shows why)"; exit 1; }
	touch $(CORE)

install: $(STAMP) $(CORE)

## run: set up, then embed the shipped query log twice with the embedded default config
run: $(STAMP) $(CORE)
	mkdir -p out
	$(BIN)/tiercache embed --input data/queries.txt --passes 2 --output out/embeddings.npy

# The shared-tier tests and benchmarks start real redis-server processes on loopback.
# Installed with apt-get when missing and we are root; otherwise say how to install it.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: install it (Debian/Ubuntu: sudo apt-get install redis-server)"; \
	  fi; }

## test: set up, then run the whole test suite
test: $(STAMP) $(CORE) redis-server
	$(BIN)/python -m pytest -q -p no:cacheprovider

## soak: the long fault runs (50 SIGKILL cycles, 90 s of 4 processes x 8 threads, 504 LMDB
## page-damage trials, 30 record-damage seeds, 1,000 state-machine examples, 1,500 overwrites
## raced by 3 reader processes, 1,200 fleet invalidations through a Redis restart, 120
## simulated power cuts, a Redis Cluster failover under load, 120 rounds of run-time store
## damage and false alarms under 3 serving processes) -> out/soak.json
soak: $(STAMP) $(CORE) redis-server
	mkdir -p out
	rm -f out/soak.json
	TIERCACHE_SOAK=1 TIERCACHE_SOAK_OUT=out/soak.json nice -n 10 $(BIN)/python -m pytest -q \
	  -p no:cacheprovider tests/test_crash.py tests/test_faults.py tests/test_stateful.py \
	  tests/test_concurrency.py tests/test_invalidation_procs.py tests/test_fleet.py \
	  tests/test_powerloss.py tests/test_cluster_failover.py tests/test_store_switch.py
	$(BIN)/python -c "import json; print(json.dumps(json.load(open('out/soak.json'))['totals'], indent=2))"

## bench: per-tier latency and footprint beside the baselines -> docs/benchmarks.md
bench: $(STAMP) $(CORE) redis-server
	$(BIN)/python bench/run.py --out docs/benchmarks.md

## sim-grid: our policies vs libCacheSim's and Belady on 4 traces x 4 sizes -> docs/simulator-grid.md
sim-grid: $(STAMP) $(CORE)
	$(BIN)/python -m tiercache.sim.grid --out docs/simulator-grid.md --png docs/img/sim-grid.png

## lint: ruff (rules, a complexity limit of 15, the format check) and mypy strict
lint: $(STAMP)
	$(BIN)/ruff check tiercache tests bench
	$(BIN)/ruff format --check tiercache tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) out .tiercache build *.egg-info
