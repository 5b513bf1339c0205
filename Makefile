# Two commands on a fresh machine (Python >= 3.10 with venv):
#   make demo   creates .venv, installs phr, runs the main job on sample_videos/
#   make test   creates .venv, installs phr with its test and lint tools, runs ruff, mypy and pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned to the wheels this project is tested with.
TORCH := torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0

.PHONY: demo test lint docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps: a second `make` reuses the environment until pyproject.toml changes.
$(VENV)/.demo-installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH) -e .
	touch $@

$(VENV)/.test-installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH) -e ".[test,ray,lint]"
	touch $@ $(VENV)/.demo-installed

# --random-weights: this machine may be offline (see README); drop it with the weight files at hand.
demo: $(VENV)/.demo-installed
	$(BIN)/phr extract sample_videos/ --random-weights
	$(BIN)/phr train
	$(BIN)/phr evaluate --plot models/evaluation.png
	$(BIN)/phr recommend sample_videos/ocean_01.mp4 --user u1

# docs/cli.md is generated from the app; tests/test_cli_docs.py fails when it is stale.
docs: $(VENV)/.demo-installed
	$(BIN)/typer phr_cli.cli utils docs --name phr --title "phr command reference" --output docs/cli.md

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/mypy

# Two workers, a test file each at a time (module fixtures are built once); conftest.py hands
# out the longest files first.
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
