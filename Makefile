# mmaux: two commands do everything on a fresh clone.
#   make run   - create the venv if missing, install, run the main job on the embedded default
#   make test  - create the venv if missing, install, run the test suite
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmaux-installed
# torch and torchvision are pinned as a pair (timm needs a torchvision built for that torch).
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install run synth train evaluate ablate test test-slow lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

data/raw/manifest.jsonl: | $(STAMP)
	$(VENV)/bin/mmaux synth

synth: data/raw/manifest.jsonl

# The main job: the embedded default data set, trained with params.yaml (ITC + ITM).
run: install synth
	HF_HUB_OFFLINE=1 $(VENV)/bin/mmaux train

train: run

evaluate: install
	$(VENV)/bin/mmaux evaluate

ablate: install synth
	HF_HUB_OFFLINE=1 $(VENV)/bin/mmaux ablate --seeds 0 1 2

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check mmaux tests

clean:
	rm -rf runs results data/cache .pytest_cache
