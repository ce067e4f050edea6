# Set-up and entry points. Every target creates the virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo demo-random test test-all lint bench clean

$(VENV)/.installed: pyproject.toml
	@py=$$(scripts/find_python.sh) || exit 1; \
	  echo "using $$py"; \
	  [ -x $(PY) ] || $$py -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

setup: $(VENV)/.installed

## The main job on the built-in default: the whole pipeline on the toy world (teacher -> DMD ->
## HiF4 calibration -> kernel-path sampling -> outputs/demo/report.md).
demo: $(VENV)/.installed
	$(PY) -m train.demo

## Prompt to mp4 through umT5 + the dual-expert loop + the VAE on a tiny random model (a smoke
## test of the inference machinery, not a trained model).
demo-random: $(VENV)/.installed
	$(PY) -m wanjax.demo

## The default test suite (under 20 minutes on 2 CPU cores).
test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## Everything, including tests marked slow.
test-all: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
