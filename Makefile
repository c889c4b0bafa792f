.DEFAULT_GOAL := help
VENV ?= .venv

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: build-dev
build-dev: ## build the extension in debug mode into .venv, editable, with the test and lint tools
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q "maturin>=1.7,<2"
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --extras test,lint

.PHONY: test
test: ## install test dependencies; run cargo tests, the loom model and pytest on CPython 3.10-3.13
	bash scripts/test.sh

.PHONY: test-rs
test-rs: ## the Rust core's tests only
	cargo test -p ferrio-core

.PHONY: lint
lint: ## rustfmt, clippy (warnings are errors), ruff, mypy and pyright (strict), stubtest; own venv unless VENV= is given
	bash scripts/lint.sh

.PHONY: bench
bench: ## install ferrio with the benchmark peers and run the side-by-side benchmark
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q '.[bench]'
	$(VENV)/bin/python -m ferrio bench
