# `make demo` and `make test` work from a fresh clone: each creates (or
# reuses) a virtual environment, installs the package, then runs.
#
# TORCH picks the PyTorch build. The default pin resolves to the local CPU
# wheel on the project's machines; elsewhere pass e.g. `make test TORCH=torch`
# (or install torch into $(VENV) first) to get the CUDA build.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.hemoe_sk-installed
PYTEST_ARGS ?= -n 2

BENCH_VENV ?= .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.hemoe_sk-bench-installed

.PHONY: install demo lint test bench bench-install bench-large docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/hemoe-sk demo

lint: install
	$(BIN)/python -m ruff check hemoe_sk tests examples

# Lint, then the tests and the package's doctests (setup.cfg: testpaths,
# --doctest-modules).
test: lint
	# One torch thread per pytest worker: -n 2 workers already fill 2 cores.
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.run --quick

# The anchors (LightGBM, pytabkit's RealMLP and TabM) live in their own
# environment, never in the library's: the bench extra. pytabkit asks for
# torch>=2.0, so $(TORCH) goes on the same pip command line and pip keeps
# the pinned (CPU) build instead of pulling another.
$(BENCH_STAMP): pyproject.toml
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install -q --upgrade pip
	$(BENCH_BIN)/python -m pip install -q "$(TORCH)"
	$(BENCH_BIN)/python -m pip install -q -e ".[bench]" "$(TORCH)"
	touch $(BENCH_STAMP)

bench-install: $(BENCH_STAMP)

# The scale tier with the anchors, then the Pareto report (hours on 2 cores).
bench-large: bench-install
	OMP_NUM_THREADS=1 $(BENCH_BIN)/python -m benchmarks.run --tier large
	$(BENCH_BIN)/python -m benchmarks.run pareto

docs: install
	$(BIN)/python -m pip install -q -e ".[docs]"
	$(BIN)/python -m sphinx -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) $(BENCH_VENV) docs/_build .pytest_cache
