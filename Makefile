# The reasoning book. `make book` renders it, `make test` checks it (what CI runs). See README.md.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Nothing downloads weights or datasets at run time in the book or the tests.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONUNBUFFERED := 1
# A waiting OpenMP thread yields its core instead of spinning: two torch jobs on a small machine then share it
# fairly instead of slowing each other several-fold (benchmarks/bench_threads.py measures it).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install book book-clean test test-fast check-site chromium gpu bench paper seeds clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch, transformers, jupyter_book, papermill, plotly, playwright, reasoning_lib"
	touch $(STAMP)

# Execute every chapter at its default (tiny) preset and render the book to _build/html/.
book: install
	$(BIN)/jupyter-book build . -W --keep-going

# Forget executed outputs (after changing reasoning_lib: the cache keys on notebook code only).
book-clean:
	$(BIN)/jupyter-book clean . --all

# Unit tests, every chapter at the smoke preset with papermill, a book build and a browser check.
test: install chromium
	$(BIN)/python -m pytest -v -rs --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not notebook and not browser"

# Build the real book, open every chapter in headless Chromium, save screenshots under _build/screenshots.
check-site: book chromium
	$(BIN)/python tests/site_check.py _build/html

chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	    else echo "chromium is missing: run 'sudo apt-get install -y chromium' for the browser checks"; fi; }

# Every chapter at its paper preset, in book order (a GPU box with internet: the presets load hub models/data).
paper: install
	mkdir -p _build/paper
	for nb in notebooks/[0-9]*.ipynb; do \
	  HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 $(BIN)/papermill $$nb _build/paper/$$(basename $$nb) -p preset paper || exit 1; \
	done

# flash-attn for CUDA machines (built against the installed CUDA torch).
gpu: install
	$(BIN)/python -m pip install --no-build-isolation -e ".[gpu]"

# Every benchmarks/bench_*.py; writes the generated section of benchmarks/RESULTS.md (BENCH_ARGS=--quick: seconds each).
bench: install
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# Each chapter's tiny run over seeds 0, 1, 2 (hours on 2 CPU cores; not part of `make book`): writes
# benchmarks/seeds.json, a dated section of benchmarks/RESULTS.md and the book page book/seeds.md.
seeds: install
	$(BIN)/python -m reasoning_lib.seeds $(SEEDS_ARGS)

clean:
	rm -rf _build
