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

.PHONY: install demo lint test bench docs clean

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

docs: install
	$(BIN)/python -m pip install -q -e ".[docs]"
	$(BIN)/python -m sphinx -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build .pytest_cache
