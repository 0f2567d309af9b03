# Everything runs from a local virtual environment; `make demo` and `make test` create it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck unit services bench clean oldest

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/centure-audit demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Services the suite talks to for real: PostgreSQL (the store's second backend), Chromium (browser tests), and
# WorkOS's OpenAPI spec (pinned, checksummed) the emulator is checked against. As root they are installed and
# started; otherwise the tests that need them are skipped, and say so. Under CI=true a missing one fails the run.
services:
	scripts/test-services.sh >/dev/null

unit: $(STAMP)
	DSN="$$(scripts/test-services.sh)" && CENTURE_AUDIT_TEST_POSTGRES_DSN="$$DSN" $(BIN)/pytest

# The route-template tests against the oldest FastAPI and Starlette the package supports (its own .venv-oldest).
oldest:
	scripts/test-oldest-deps.sh

test: lint typecheck unit oldest

bench: $(STAMP)
	$(BIN)/python benchmarks/request_overhead.py
	$(BIN)/python benchmarks/enrichment.py
	$(BIN)/python benchmarks/delivery.py
	$(BIN)/python benchmarks/store.py
	-$(BIN)/python benchmarks/cpu_per_event.py --all
	$(BIN)/python benchmarks/committer_stages.py
	-$(BIN)/python benchmarks/server_throughput.py
	-$(BIN)/python benchmarks/pg_outbox.py
	-$(BIN)/python benchmarks/durable_latency.py

clean:
	rm -rf $(VENV) .venv-oldest .mypy_cache .ruff_cache .pytest_cache
