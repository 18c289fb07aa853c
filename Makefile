# xai_torch: `make demo` and `make test` are all a fresh machine with Python 3.11 needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers for make test: one per core, at most 4 (each gets cores / workers torch threads)
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
# e.g. make demo DEMO_ARGS='--methods fast' or DEMO_ARGS=--full (the paper settings; make demo-full)
DEMO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install browser test demo demo-full bench bench-gpu lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install xai_torch editable with the dev, demo, parity and ray extras

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev,demo,parity,ray]'
	touch $(STAMP)

# tests/test_report.py opens the demo report in headless Chromium: Debian's chromium package,
# installed with apt-get when it is missing (sudo only when not root).
APT_CHROMIUM := apt-get update && apt-get install -y --no-install-recommends chromium
browser:  ## install Debian's chromium with apt-get when it is missing (the report test opens the report in it)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	echo "make browser: chromium is missing; installing it: $$SUDO $(APT_CHROMIUM)"; \
	if $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    chromium; then exit 0; fi; \
	echo "make browser: could not install Chromium. Run as root: $(APT_CHROMIUM)" >&2; \
	echo "  (or with sudo; on another system install Chromium so that 'chromium' is on PATH), then make test again." >&2; \
	exit 1

test: install browser lint  ## install what the tests need (venv, Chromium), lint, then run the whole suite (parity tests included)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

demo: install  ## every family of methods on 2 packaged photos with CPU budgets (under 2 min on 2 cores) -> out/demo
	$(BIN)/xai-torch demo --out out/demo $(DEMO_ARGS)

demo-full: install  ## the paper settings of every method on 5 photos (prints its estimate first) -> out/demo-full
	$(BIN)/xai-torch demo --full --out out/demo-full $(DEMO_ARGS)

bench: install  ## run the benchmarks and print ratios against the floor and the reference libraries
	$(BIN)/python -m benchmarks

bench-gpu: install  ## every family on one GPU (<= 10 min): ms/img, x floor, x ref, peak CUDA MB, bf16 error, CUDA tests
	$(BIN)/python -m benchmarks --gpu

lint: install  ## ruff on everything, mypy strict on xai_torch/ (pyproject.toml's [tool.mypy])
	$(BIN)/ruff check xai_torch tests benchmarks
	$(BIN)/mypy

clean:  ## remove the virtual environment and outputs
	rm -rf $(VENV) out build *.egg-info
