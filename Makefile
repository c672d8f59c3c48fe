# Quick start (see README.md):
#   make plan   - create .venv, install fugakuperf, run `fugakuperf plan --params 13e9`
#   make test   - create/update .venv and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: plan test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,mpi]'
	touch $(STAMP)

plan: $(STAMP)
	$(BIN)/fugakuperf plan --params 13e9

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.trainer

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
