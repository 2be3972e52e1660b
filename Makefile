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

# The main job on the built-in synthetic data: a phi = 1 search for ResNet-20 (CIFAR-style) at a
# 24px proxy by successive halving: all 10 kept candidates (within 10% of 2x the FLOPs) x 2 seeds
# short-trained on 2 CPU cores, the top third (4) again at three times the budget, then the
# ranking, the rank agreement of the two budgets over those 4, the family and the plots.
# residual_init scaled lets the deepest candidates train at this budget
# (experiments/deep-candidates/NOTES.md). About 7 minutes on 2 AVX2-only cores (README.md).
demo: $(STAMP)
	$(BIN)/scalesearch grid --base resnet20-cifar --resolution 24 --target-flops 2x --dataset synthetic \
	    --epochs 2 --max-trials 10 --seeds 2 --fidelity halving --set eta=3 --set rungs=2 \
	    --set data.train_subset=1500 --set data.val_subset=500 \
	    --set train.batch_size=32 --set train.eval_every=0 --set train.residual_init=scaled \
	    --set grid.step=0.05 --set grid.alpha_max=2 --set grid.beta_max=1.45 --set grid.tolerance=0.1 \
	    --set order=spread --set phi_max=6 \
	    --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# Two pytest workers (pytest-xdist): most tests keep one core busy, so a 2-core
# machine runs it in about half the time; the Ray tests share one worker (xdist_group "ray").
JOBS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadgroup

# Benchmarks, each a script printing its tables with ratios measured side by side
# (docs/performance.md): the step's forms, the trainer against a hand-written loop, FLOPs counting.
bench: $(STAMP)
	$(BIN)/python experiments/bench/step_forms.py
	$(BIN)/python experiments/bench/trainer_vs_loop.py
	$(BIN)/python experiments/bench/flops.py

clean:
	rm -rf $(VENV) .pytest_cache
