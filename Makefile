# OmniHub — every command a newcomer needs. `make help` lists them.
#
# All targets install what they need into .venv (Python) and .tools (buf)
# on first use, so a fresh machine needs only Python 3.11 and the package
# registries.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := PYTHONPATH=.:protos $(BIN)/python
STAMP := $(VENV)/.installed
BUF := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PROTO_FILES := $(shell find protos -name '*.proto' | sort)

.DEFAULT_GOAL := help
.PHONY: help install run test lint protos bench lock format clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): deploy/requirements/dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r deploy/requirements/dev.txt
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies

$(BUF):
	npm install --no-save --no-audit --no-fund --silent --prefix .tools @bufbuild/buf@$(BUF_VERSION)

run: $(STAMP) ## Start the whole suite locally (embedded PostgreSQL unless DATABASE_URL is set)
	$(PY) -m deploy.local

test: $(STAMP) ## Run the test suite (TEST_DATABASE_URL or an embedded PostgreSQL)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) $(BUF) ## ruff, mypy --strict, import boundaries, buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) -m mypy
	PYTHONPATH=.:protos $(BIN)/lint-imports
	cd protos && ../$(BUF) lint

protos: $(STAMP) ## Regenerate the Python stubs from protos/
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=protos --grpc_python_out=protos \
		--mypy_out=quiet:protos --mypy_grpc_out=quiet:protos $(PROTO_FILES)

bench: $(STAMP) ## Benchmarks through the gateway (see tests/bench/README.md)
	$(PY) -m tests.bench $(BENCH_ARGS)

.PHONY: scale-test
scale-test: $(STAMP) ## Two replicas of everything, one of each killed under load (tests/scale)
	$(PY) -m tests.scale $(SCALE_ARGS)

.PHONY: verify
verify: $(STAMP) ## Fuzzing, load, chaos and security evidence in one report (tests/verify)
	$(PY) -m tests.verify $(VERIFY_ARGS)

.PHONY: bench-generation
bench-generation: $(STAMP) ## Generations end to end and listing at 1M rows (tests/bench/README.md)
	$(PY) -m tests.bench.generation $(BENCH_ARGS)

lock: $(STAMP) ## Re-pin deploy/requirements/*.txt from pyproject.toml
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 -q --no-header -o deploy/requirements/runtime.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -q --no-header -o deploy/requirements/dev.txt

format: $(STAMP) ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove the virtualenv, tools and local data
	rm -rf $(VENV) .tools .data
