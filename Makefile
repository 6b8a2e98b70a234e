# loyalty-ledger: `make run` to serve, `make test` to check everything. `make help` lists all.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help install run migrate test lint typecheck pytest openapi bench format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

run: $(STAMP) ## Migrate and serve on http://127.0.0.1:8000 (embedded PostgreSQL without DATABASE_URL)
	$(BIN)/loyalty-ledger serve

migrate: $(STAMP) ## Apply database migrations
	$(BIN)/loyalty-ledger migrate

test: lint typecheck pytest ## Everything CI checks: lint, types, the test suite on real PostgreSQL

lint: $(STAMP) ## ruff: lint and format check
	$(BIN)/ruff check app migrations tests bench
	$(BIN)/ruff format --check app migrations tests bench

typecheck: $(STAMP) ## mypy --strict on app/
	$(BIN)/mypy

pytest: $(STAMP) ## The test suite (TEST_DATABASE_URL to use a server instead of an embedded one)
	$(BIN)/pytest

openapi: $(STAMP) ## Regenerate openapi/openapi.json from the app
	$(BIN)/loyalty-ledger openapi

bench: $(STAMP) ## Benchmark against pgbench on a fresh cluster; writes docs/benchmarks.{md,json}
	$(BIN)/python -m bench.run

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix app migrations tests bench
	$(BIN)/ruff format app migrations tests bench

clean: ## Remove the virtualenv and local data (the embedded database too)
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
