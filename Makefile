.DEFAULT_GOAL := help
VENV ?= .venv

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: build-dev
build-dev: ## build the extension in debug mode into .venv, editable
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q "maturin>=1.7,<2" pytest pytest-timeout anyio uvloop
	$(VENV)/bin/maturin develop

.PHONY: test
test: ## install test dependencies; run cargo tests, the loom model and pytest on CPython 3.10-3.13
	bash scripts/test.sh

.PHONY: test-rs
test-rs: ## the Rust core's tests only
	cargo test -p ferrio-core

.PHONY: lint
lint: ## rustfmt, clippy (warnings are errors), ruff
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/python -m ruff check python tests examples
	$(VENV)/bin/python -m ruff format --check python tests examples

.PHONY: bench
bench: ## install ferrio with the benchmark peers and run the side-by-side benchmark
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q '.[bench]'
	$(VENV)/bin/python -m ferrio bench
