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
	@echo "make demo   - bootstrap, build the offline sample sets, train and evaluate every domain (restoration,"
	@echo "              anomaly, medseg, speechsep, ranking; about 45 min on 2 cores), print the model-vs-baseline"
	@echo "              summary, then serve the runs (DEMO_BUDGET=tiny: a ~7 min smoke test; DEMO_SERVE=0: no server)"
	@echo "make serve  - serve the demo's run folders (sa-serve --runs runs/demo)"
	@echo "make test   - bootstrap, then run every package's tests"
	@echo "make bench  - bootstrap, then run the benchmarks (bench/results/*.json; restoration trains ~30 min)"
	@echo "make lint   - ruff + mypy on the core and the packages"

$(TOOLS)/bin/poetry:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet poetry==2.5.1 poetry-plugin-pypi-mirror==0.6.5

$(STAMP): $(TOOLS)/bin/poetry poetry.lock pyproject.toml shared_attention/pyproject.toml $(wildcard packages/*/pyproject.toml apps/*/pyproject.toml) shims/fbgemm-gpu/pyproject.toml scripts/system-packages scripts/vendor-niivue
	$(POETRY) check --lock
	$(POETRY) install --no-interaction
	@# MovieLens-100k for the ranking sample ships inside recbole; its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps recbole==1.2.1
	scripts/system-packages
	@# the web page's medical volume viewer (NiiVue), from the npm registry into sa_serve/static/vendor (a build output)
	scripts/vendor-niivue
	@touch $@

bootstrap: $(STAMP)

# DEMO_BUDGET=tiny shrinks every training to a few steps (a smoke test of about 7 minutes on 2 cores whose
# numbers are not results; the summary says so); the default is what a new user runs (about 45 minutes on
# 2 cores; the summary shows the minutes each domain trained and what a full bench run reaches).
# DEMO_SERVE=0 stops before serving.
DEMO_BUDGET ?= default
DEMO_SERVE ?= 1
DEMO_RUNS := runs/demo
ifeq ($(DEMO_BUDGET),tiny)
TOY_ARGS := train.max_steps=30 train.eval_every=30
SR_ARGS := train.max_steps=10 train.eval_every=10 data.max_val_images=2 sample_images=1
AD_TRAIN := train.max_steps=4 train.eval_every=4 train.checkpoint_every=4 model.d_models=[16,32] model.n_heads=2 model.n_layers=1
MS_TRAIN := --config vmunet-cpu model.variant=vmunet-tiny data.patch_size=[64,64] data.repeat=1 train.batch_size=2 train.max_steps=5 train.eval_every=5 train.checkpoint_every=5
MS_EVAL_DIR := data/seg-sample/val_vol_h5
SEP_DATA := data/speech-sample-tiny
SEP_SAMPLE_ARGS := --tiny
SEP_MF := --config tiny
SEP_CT := --config tiny model.arch=convtasnet
SEP_EVAL := --no-sdr
SUMMARY_ARGS := --smoke
RK_TRAIN := train.max_steps=30 train.eval_every=30 train.batch_size=128 data.max_train_rows=8000 data.max_valid_rows=4000
RK_LR_TRAIN := train.max_steps=30 train.eval_every=30 train.batch_size=128 data.max_train_rows=8000 data.max_valid_rows=4000
else
TOY_ARGS :=
SR_ARGS := train.max_minutes=6
AD_TRAIN := train.max_minutes=6
MS_TRAIN := --config vmunet-cpu train.max_minutes=8
MS_EVAL_DIR := data/seg-sample/test_vol_h5
SEP_DATA := data/speech-sample
SEP_SAMPLE_ARGS :=
SEP_MF := --config cpu-small train.max_minutes=6
SEP_CT := --config convtasnet-cpu-small train.max_minutes=6
SEP_EVAL := --oracle --max-items 40
SUMMARY_ARGS := --bench bench/results
RK_TRAIN :=
RK_LR_TRAIN :=
endif

demo: $(STAMP)
	rm -rf $(DEMO_RUNS)
	@echo "== engine: built-in toy task =="
	$(VENV)/bin/shared-attention demo train.run_dir=$(DEMO_RUNS)/toy-pointer $(TOY_ARGS)
	@echo "== restoration: HAT on the offline sr-sample set (x2) =="
	$(VENV)/bin/sa-restoration sample data/sr-sample
	$(VENV)/bin/sa-restoration train --config cpu train.run_dir=$(DEMO_RUNS)/restoration train.progress=false $(SR_ARGS)
	$(VENV)/bin/sa-restoration evaluate --run $(DEMO_RUNS)/restoration
	$(VENV)/bin/sa-restoration predict data/sr-sample/test/LRbicx2/chelsea.png $(DEMO_RUNS)/restoration/chelsea_x2.png --run $(DEMO_RUNS)/restoration
	@echo "side-by-sides (bicubic | model | ground truth): $(DEMO_RUNS)/restoration/samples/"
	@echo "== anomaly: FOD on the offline ad-sample textures (brick) =="
	$(VENV)/bin/sa-anomaly sample data/ad-sample
	$(VENV)/bin/sa-anomaly train --config cpu data.root=data/ad-sample data.category=brick train.run_dir=$(DEMO_RUNS)/anomaly train.progress=false $(AD_TRAIN)
	$(VENV)/bin/sa-anomaly evaluate --run $(DEMO_RUNS)/anomaly
	$(VENV)/bin/sa-anomaly predict data/ad-sample/brick/test/scratch/000.png $(DEMO_RUNS)/anomaly/predict --run $(DEMO_RUNS)/anomaly
	@echo "== medseg: Mamba U-Net (VM-UNet) on the offline MNI152 seg-sample (GM / WM) =="
	$(VENV)/bin/sa-medseg sample data/seg-sample
	$(VENV)/bin/sa-medseg train $(MS_TRAIN) train.run_dir=$(DEMO_RUNS)/medseg train.progress=false
	$(VENV)/bin/sa-medseg evaluate --run $(DEMO_RUNS)/medseg --data $(MS_EVAL_DIR) --save $(DEMO_RUNS)/medseg/overlays
	$(VENV)/bin/sa-medseg predict data/seg-sample/test_nifti/img/img0001.nii.gz $(DEMO_RUNS)/medseg/pred/labels.nii.gz --run $(DEMO_RUNS)/medseg
	@echo "== speechsep: MossFormer vs ConvTasNet on the offline speech-sample set (8 kHz, held-out speaker pair) =="
	$(VENV)/bin/sa-speechsep sample $(SEP_DATA) $(SEP_SAMPLE_ARGS)
	$(VENV)/bin/sa-speechsep train $(SEP_MF) train.run_dir=$(DEMO_RUNS)/speechsep train.progress=false
	$(VENV)/bin/sa-speechsep train $(SEP_CT) train.run_dir=$(DEMO_RUNS)/baselines/speechsep-convtasnet train.progress=false
	$(VENV)/bin/sa-speechsep evaluate --run $(DEMO_RUNS)/speechsep --baseline $(DEMO_RUNS)/baselines/speechsep-convtasnet $(SEP_EVAL)
	$(VENV)/bin/sa-speechsep predict "$$(ls $(SEP_DATA)/tt/mix/*.wav | head -n 1)" --out $(DEMO_RUNS)/speechsep/separated --run $(DEMO_RUNS)/speechsep
	@echo "== ranking: Hiformer vs logistic regression on the offline MovieLens-100k rank-sample =="
	$(VENV)/bin/sa-ranking sample data/rank-sample
	$(VENV)/bin/sa-ranking train --config hiformer train.run_dir=$(DEMO_RUNS)/ranking train.num_threads=1 train.progress=false $(RK_TRAIN)
	$(VENV)/bin/sa-ranking train --config lr train.run_dir=$(DEMO_RUNS)/baselines/ranking-lr train.num_threads=1 train.progress=false $(RK_LR_TRAIN)
	$(VENV)/bin/sa-ranking evaluate --run $(DEMO_RUNS)/ranking --baseline $(DEMO_RUNS)/baselines/ranking-lr
	$(VENV)/bin/sa-ranking predict data/rank-sample/candidates.jsonl --run $(DEMO_RUNS)/ranking
	@echo "== summary: model vs baseline per domain =="
	$(VENV)/bin/sa-serve summary $(DEMO_RUNS) $(SUMMARY_ARGS)
	@if [ "$(DEMO_SERVE)" != "0" ]; then $(VENV)/bin/sa-serve --runs $(DEMO_RUNS); fi

serve: $(STAMP)
	$(VENV)/bin/sa-serve --runs $(DEMO_RUNS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/attention.py
	$(PY) bench/speed.py
	$(PY) bench/precision.py
	$(PY) bench/restoration.py
	$(PY) bench/anomaly.py
	$(PY) bench/medseg.py
	$(PY) bench/speechsep.py
	$(PY) bench/ranking.py
	$(PY) bench/serve.py

bench-quick: $(STAMP)
	$(PY) bench/attention.py --quick
	$(PY) bench/restoration.py --skip-quality --repeat 1

lint: $(STAMP)
	$(VENV)/bin/ruff check shared_attention packages apps tests bench datasets
	$(VENV)/bin/mypy shared_attention/src/shared_attention $(wildcard packages/*/src/sa_*) apps/serve/src/sa_serve

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
