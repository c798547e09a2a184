# Orch: `make run` starts the whole stack with embedded PostgreSQL and Redis; `make test`
# runs every check CI runs. Both create .venv in the repo root on first use, and install what
# they need from the system's packages when it is missing (scripts/apt-install: apt-get, as
# root or with sudo -n; elsewhere one line says what to install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint rules unit integration bench up down clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV) \
		&& sh scripts/apt-install "$(PYTHON) -m venv failed (Debian/Ubuntu ship venv in its own package)" \
			"$$($(PYTHON) -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')" \
		&& $(PYTHON) -m venv $(VENV); }
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

# Prometheus rules: syntax, and the promtool unit tests that make every alert fire. promtool
# comes from Debian's prometheus package, installed when missing.
rules:
	@sh scripts/ensure-promtool
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
