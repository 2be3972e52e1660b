# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# TORCH picks the torch build installed before everything else, e.g.
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu121"
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: | $(BIN)/python
	rm -f $(STAMP)
	$(MAKE) $(STAMP) TORCH="$(TORCH)"

demo: $(STAMP)
	$(BIN)/scalesearch family --base efficientnet-b0 --alpha 1.2 --beta 1.1 --gamma 1.15 --phi-max 7

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python experiments/bench_flops.py

clean:
	rm -rf $(VENV) .pytest_cache
