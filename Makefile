# xai_torch: `make demo` and `make test` are all a fresh machine with Python 3.11 needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# e.g. make demo DEMO_ARGS='--methods fast' (leaves out the slow perturbation methods; the default runs all)
DEMO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test demo bench lint clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install xai_torch editable with the dev, demo and parity extras

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev,demo,parity]'
	touch $(STAMP)

test: install  ## run the whole test suite (parity tests included)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install  ## every method on the packaged photos with the packaged model; writes out/demo/report.html
	$(BIN)/xai-torch demo --out out/demo $(DEMO_ARGS)

bench: install  ## run the benchmarks and print ratios against the floor and the reference libraries
	$(BIN)/python -m benchmarks

lint: install  ## ruff
	$(BIN)/ruff check xai_torch tests benchmarks

clean:  ## remove the virtual environment and outputs
	rm -rf $(VENV) out build *.egg-info
