# mmaux: two commands do everything on a fresh clone.
#   make run   - create the venv if missing, install, run the pipeline (dvc repro) on the
#                embedded default: validate -> preprocess -> tune -> train -> evaluate
#   make test  - create the venv if missing, install, run the test suite
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmaux-installed
# torch and torchvision are pinned as a pair (timm needs a torchvision built for that torch).
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# Stage commands (`python -m flows.X`) and `dvc` itself come from the venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE := 1

MULTIOFF ?= ../shared/datasets/multioff

.PHONY: install run synth train evaluate ablate study benchmark-multioff test test-slow lint mlflow-ui clean \
	infra-up infra-down infra-status

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,pipeline,infra]"
	touch $(STAMP)

install: $(STAMP)

data/raw/manifest.jsonl: | $(STAMP)
	$(VENV)/bin/mmaux synth

synth: data/raw/manifest.jsonl

# The main job: the cached pipeline on the embedded default (data/raw, rebuilt
# deterministically from the generator, is what data.dvc names).
run: install synth
	dvc repro

# One training run with the CLI alone (no tuning, no tracking): runs/default/.
train: install synth
	mmaux train

evaluate: install
	$(VENV)/bin/mmaux evaluate

ablate: install synth
	mmaux ablate --seeds 0 1 2

# The aux-loss study on the embedded default: paired statistics, plots, results/study/report.md
study: install synth
	mmaux study --preset aux

benchmark-multioff: install  # the real-data study and recipe (docs/multioff.md)
	python benchmarks/multioff.py --src $(MULTIOFF) --out results/multioff --workers 2

# The local stack of infra/ (PostgreSQL, MLflow and Prefect servers, workers) on 127.0.0.1.
infra-up: install
	bash infra/local/stack.sh up

infra-down:
	bash infra/local/stack.sh down

infra-status:
	bash infra/local/stack.sh status

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

mlflow-ui: install
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

lint: install
	$(VENV)/bin/ruff check mmaux tests

clean:
	rm -rf runs results data/processed reports plots tuning metrics.json .pytest_cache
