# Every target bootstraps what it needs from a fresh clone: a tools venv with poetry + the PyPI-mirror
# plugin (.tools/poetry), then the project venv (.venv) from poetry.lock.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools/poetry
POETRY := scripts/poetry
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help bootstrap demo test bench bench-quick lint serve clean

help:
	@echo "make demo   - bootstrap, then train the built-in task end to end and print a summary"
	@echo "make test   - bootstrap, then run every package's tests"
	@echo "make bench  - bootstrap, then run the benchmarks (bench/results/*.json; restoration trains ~30 min)"
	@echo "make lint   - ruff + mypy on the core and the packages"

$(TOOLS)/bin/poetry:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet poetry==2.5.1 poetry-plugin-pypi-mirror==0.6.5

$(STAMP): $(TOOLS)/bin/poetry poetry.lock pyproject.toml shared_attention/pyproject.toml $(wildcard packages/*/pyproject.toml apps/*/pyproject.toml) shims/fbgemm-gpu/pyproject.toml scripts/system-packages
	$(POETRY) check --lock
	$(POETRY) install --no-interaction
	@# MovieLens-100k for the ranking sample ships inside recbole; its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps recbole==1.2.1
	scripts/system-packages
	@touch $@

bootstrap: $(STAMP)

# DEMO_BUDGET=tiny shrinks every training to seconds (CI smoke runs); the default is what a new user runs.
DEMO_BUDGET ?= default
ifeq ($(DEMO_BUDGET),tiny)
TOY_ARGS := train.max_steps=30 train.eval_every=30
SR_ARGS := train.max_steps=10 train.eval_every=10 data.max_val_images=2 sample_images=1
else
TOY_ARGS :=
SR_ARGS := train.max_minutes=8
endif
DEMO_RUNS := runs/demo

demo: $(STAMP)
	rm -rf $(DEMO_RUNS)
	@echo "== engine: built-in toy task =="
	$(VENV)/bin/shared-attention demo train.run_dir=$(DEMO_RUNS)/toy-pointer $(TOY_ARGS)
	@echo "== restoration: HAT on the offline sr-sample set (x2) =="
	$(VENV)/bin/sr-sample data/sr-sample
	$(VENV)/bin/sa-restoration train --config cpu-x2 train.run_dir=$(DEMO_RUNS)/restoration train.progress=false $(SR_ARGS)
	$(VENV)/bin/sa-restoration evaluate --run $(DEMO_RUNS)/restoration
	$(VENV)/bin/sa-restoration predict data/sr-sample/test/LRbicx2/chelsea.png $(DEMO_RUNS)/restoration/chelsea_x2.png --run $(DEMO_RUNS)/restoration
	@echo "side-by-sides (bicubic | model | ground truth): $(DEMO_RUNS)/restoration/samples/"

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/attention.py
	$(PY) bench/restoration.py

bench-quick: $(STAMP)
	$(PY) bench/attention.py --quick
	$(PY) bench/restoration.py --skip-quality --repeat 1

lint: $(STAMP)
	$(VENV)/bin/ruff check shared_attention packages tests bench datasets
	$(VENV)/bin/mypy shared_attention/src/shared_attention $(wildcard packages/*/src/sa_*)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
