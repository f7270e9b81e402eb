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

.PHONY: help bootstrap demo test bench lint serve clean

help:
	@echo "make demo   - bootstrap, then train the built-in task end to end and print a summary"
	@echo "make test   - bootstrap, then run every package's tests"
	@echo "make bench  - bootstrap, then run the benchmarks (bench/results/*.json)"
	@echo "make lint   - ruff + mypy on shared_attention"

$(TOOLS)/bin/poetry:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet poetry==2.5.1 poetry-plugin-pypi-mirror==0.6.5

$(STAMP): $(TOOLS)/bin/poetry poetry.lock pyproject.toml shared_attention/pyproject.toml $(wildcard packages/*/pyproject.toml apps/*/pyproject.toml) shims/fbgemm-gpu/pyproject.toml
	$(POETRY) check --lock
	$(POETRY) install --no-interaction
	@touch $@

bootstrap: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo/toy-pointer
	$(VENV)/bin/shared-attention demo train.run_dir=runs/demo/toy-pointer

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/attention.py

lint: $(STAMP)
	$(VENV)/bin/ruff check shared_attention
	$(VENV)/bin/mypy shared_attention/src/shared_attention

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
