# invdiff developer commands. Every target installs what it needs into .venv first.
# torch is pinned to the CPU build available on CPU machines (an unpinned torch pulls CUDA).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PLUGINS := $(sort $(wildcard plugins/invdiff-*))
STAMP := $(VENV)/.installed

.PHONY: install test test-slow test-accuracy lint docs demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[test,dask,tensorboard,docs,peers]" $(addprefix -e ,$(PLUGINS))
	touch $@

test: install  ## the default test run (fast; slow end-to-end tests excluded)
	$(BIN)/pytest

test-slow: install  ## the slow end-to-end tests, accuracy targets included (CI; about 15 minutes)
	$(BIN)/pytest -m slow --durations=25; rc=$$?; [ $$rc -eq 5 ] && echo "no slow tests" || exit $$rc

test-accuracy: install  ## only the accuracy targets on a CPU budget (about 7 minutes)
	$(BIN)/pytest -m accuracy

lint: install
	$(BIN)/ruff check .

docs: install  ## the documentation site into site/; --strict: a broken link or docstring fails it
	$(BIN)/python benchmarks/results_pages.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

demo: install  ## simulate, train, sample on the embedded default; figures + metrics in runs/demo
	$(BIN)/invdiff demo --out runs/demo

bench: install  ## speed benchmarks (simulation, FEM, nets, samplers), each measured side by side
	$(BIN)/pytest benchmarks/bench_simulate.py --benchmark-only
	$(BIN)/python benchmarks/bench_fem.py
	$(BIN)/python benchmarks/bench_nets.py
	$(BIN)/python benchmarks/bench_samplers.py --quick

clean:
	rm -rf $(VENV) runs .benchmarks site
