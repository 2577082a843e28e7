# citylake — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_LAKE ?= demo-lake

.DEFAULT_GOAL := help
.PHONY: help install demo test bench lint clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "citylake needs Python 3.11 or newer"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

install: $(STAMP) ## Create .venv and install citylake with test and bench extras

demo: $(STAMP) ## Build a sample city lake in ./demo-lake and show what it holds
	rm -rf $(DEMO_LAKE)
	$(BIN)/citylake --lake $(DEMO_LAKE) init
	$(BIN)/citylake --lake $(DEMO_LAKE) sample --devices 2000 --days 2 --seed 7
	$(BIN)/citylake --lake $(DEMO_LAKE) tables
	@echo "Footfall per park: pings in interior cells count directly; boundary cells get the exact test"
	$(BIN)/citylake --lake $(DEMO_LAKE) sql "SELECT p.name, count(*) AS pings, count(DISTINCT device_id) AS devices \
	  FROM pings JOIN place_cells c USING (h3_cell) JOIN places p USING (place_id) \
	  WHERE c.interior OR ST_Contains(ST_GeomFromWKB(p.geometry), ST_Point(pings.lon, pings.lat)) \
	  GROUP BY 1 ORDER BY 2 DESC LIMIT 5"

test: $(STAMP) ## Run the test suite (unit, property, integration and slow tests)
	$(BIN)/python -m pytest

bench: $(STAMP) ## Run the benchmarks and write bench/results.json
	$(BIN)/python bench/run.py --out bench/results.json

lint: $(STAMP) ## Check style with ruff
	$(BIN)/python -m ruff check citylake h3_index lake ingestion queries analytics viz tests bench

clean: ## Remove the environment, demo lake and caches
	rm -rf $(VENV) $(DEMO_LAKE) .pytest_cache .hypothesis test-artifacts bench/work
