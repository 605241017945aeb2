# The two commands of the README: `make quickstart` (main job) and `make test` (the suite).
# Both create the virtualenv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmtune-installed

.PHONY: setup quickstart test lint bench clean

$(STAMP): pyproject.toml requirements-assets.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# pinned CPU torch first: a plain `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -r requirements-assets.txt
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(BIN)/lmtune quickstart

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

test: lint
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'  # trl, the peer of sft_speed.py
	$(BIN)/python bench/sst2_speed.py
	$(BIN)/python bench/sft_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
