# Orch: `make run` starts the whole stack with embedded PostgreSQL and Redis; `make test`
# runs every check CI runs. Both create .venv in the repo root on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint rules unit integration bench up down clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(BIN)/orch up --demo

lint: $(STAMP)
	$(BIN)/ruff check core worker dashboards app bench tests
	$(BIN)/ruff format --check core worker dashboards app bench
	$(BIN)/lint-imports
	$(BIN)/mypy

# Prometheus rules: syntax, and the promtool unit tests that make every alert fire.
rules:
	@command -v promtool >/dev/null || { echo "promtool is missing: apt-get install prometheus (Debian), or put promtool on PATH"; exit 1; }
	promtool check config grafana/prometheus/prometheus.yml grafana/prometheus/prometheus.local.yml
	promtool check rules grafana/prometheus/rules/*.yml
	promtool test rules grafana/prometheus/tests/*.yml

test: lint rules
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

up:
	docker compose up -d --build

down:
	docker compose down

clean:
	rm -rf $(VENV) .orch .mypy_cache .ruff_cache .pytest_cache .hypothesis
