# citylake — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_LAKE ?= demo-lake
DEMO_CITY ?= demo-city
# The demo keeps its pseudonym key beside the lake directory, never inside it.
CITYLAKE := CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE=$(CURDIR)/demo-pseudonym.key $(BIN)/citylake --lake $(DEMO_LAKE)

.DEFAULT_GOAL := help
.PHONY: help install system-deps viz-assets demo demo-live test bench lint clean
# apt-get needs root: use sudo when not already root
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "citylake needs Python 3.11 or newer"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,notebooks]'
	@touch $@

install: $(STAMP) ## Create .venv and install citylake with test and bench extras

demo: $(STAMP) viz-assets ## Generate a sample city, ingest it into ./demo-lake, query it, write maps and district reports
	rm -rf $(DEMO_LAKE) $(DEMO_CITY) demo-maps demo-reports
	$(CITYLAKE) init
	$(BIN)/citylake generate-city --out $(DEMO_CITY) --devices 2000 --days 7 --seed 1
	$(CITYLAKE) ingest places $(DEMO_CITY)/places.geojson
	$(CITYLAKE) ingest sensors $(DEMO_CITY)/sensors.csv
	$(CITYLAKE) ingest readings $(DEMO_CITY)/readings.csv
	$(CITYLAKE) ingest pings $(DEMO_CITY)/pings.csv
	$(CITYLAKE) tables
	$(CITYLAKE) sql --role steward "SELECT kind_of_reason, count(*) AS rows FROM (SELECT split_part(reason, ' ', 1) || ' … ' || \
	  regexp_extract(reason, '(out of range|not a timestamp|not a number|missing|future|fields)') AS kind_of_reason FROM quarantine) \
	  GROUP BY 1 ORDER BY 2 DESC"
	@echo "The steward's exact footfall per park, expo and business district per day (k-anonymous: groups under 10 devices withheld)"
	$(CITYLAKE) query footfall --role steward --category park --category expo --category business_district --freq 1d --from 2026-11-05 --to 2026-11-07
	@echo "Releasing every day with differential privacy (the lake's budget: epsilon 1 per day); analysts read only releases"
	$(CITYLAKE) publish
	$(CITYLAKE) query footfall --category expo --from 2026-11-05T08:00Z --to 2026-11-05T20:00Z
	$(CITYLAKE) map footfall --out demo-maps/footfall.html
	$(CITYLAKE) map od --category district --out demo-maps/flows.html
	$(CITYLAKE) report --district places:expo --district places:cbd --out demo-reports --for-planners
	@echo "Open demo-maps/footfall.html and demo-reports/places_expo.html in a browser (both work offline);"
	@echo "demo-reports/summary.json is the machine-readable summary."
	$(MAKE) --no-print-directory demo-live
	@echo
	@echo "Serve the demo lake to planners (browser) and analysts (HTTP SQL, Flight SQL):"
	@echo "  CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE=$(CURDIR)/demo-pseudonym.key $(BIN)/citylake --lake $(DEMO_LAKE) serve"
	@echo "then open http://127.0.0.1:8080/ and sign in with this planner token (shown once; the lake keeps only its hash):"
	@$(CITYLAKE) users add demo-planner --role planner | tail -n 1
	@echo "and this analyst token for SQL tools (see README, \"citylake serve\"):"
	@$(CITYLAKE) users add demo-analyst --role analyst | tail -n 1

# The live chain on the demo city: history up to 10:30 of the expo's surge day ingested from files, then 10:30-11:30 replayed
# at 60x into two live ingesters with `citylake watch` running; the surge (its crowd arrives at 11:00) becomes an alert.
LIVE_LAKE ?= demo-live-lake
LIVE := CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE=$(CURDIR)/demo-live-pseudonym.key CITYLAKE_MQTT_COMMIT_SECONDS=2 \
	CITYLAKE_WATCH_POLL_SECONDS=1 CITYLAKE_WATCH_LATENESS_MINUTES=0 CITYLAKE_WATCH_RELEASED_CLOCK=event $(BIN)/citylake --lake $(LIVE_LAKE)
SURGE_DAY := 2026-11-05
CITY_FIRST_DAY := 2026-11-02

demo-live: $(STAMP) system-deps ## Live alerts: the demo city's expo surge replayed through MQTT (needs `make demo`'s city)
	@test -f $(DEMO_CITY)/pings.csv || { echo "run make demo first: it generates $(DEMO_CITY)"; exit 2; }
	rm -rf $(LIVE_LAKE) demo-live-pseudonym.key
	$(LIVE) init
	$(LIVE) ingest places $(DEMO_CITY)/places.geojson
	$(LIVE) ingest sensors $(DEMO_CITY)/sensors.csv
	$(BIN)/python -c "import polars as pl; [pl.read_csv('$(DEMO_CITY)/' + n + '.csv', infer_schema=False) \
	  .filter(pl.col('ts') < pl.lit('$(SURGE_DAY)T10:30:00Z')).write_csv('$(DEMO_CITY)/history-' + n + '.csv') for n in ('pings', 'readings')]"
	@echo "history: the city up to $(SURGE_DAY) 10:30, from files"
	$(LIVE) ingest pings $(DEMO_CITY)/history-pings.csv
	$(LIVE) ingest readings $(DEMO_CITY)/history-readings.csv
	@echo "the history's release: what the crowd alerts analysts read are judged against"
	$(LIVE) publish --from $(CITY_FIRST_DAY) --to $(SURGE_DAY)
	@set -e; port=$$($(BIN)/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	broker=mqtt://127.0.0.1:$$port; \
	printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n' $$port > $(LIVE_LAKE)/mosquitto.conf; \
	$$(command -v mosquitto || echo /usr/sbin/mosquitto) -c $(LIVE_LAKE)/mosquitto.conf >/dev/null 2>&1 & mosq=$$!; \
	trap 'kill $$mosq 2>/dev/null' EXIT; sleep 1; \
	$(LIVE) ingest mqtt --feed pings --broker $$broker --topic city/pings --client-id demo-pings & pings=$$!; \
	$(LIVE) ingest mqtt --feed readings --broker $$broker --topic city/sensors/readings --client-id demo-readings & readings=$$!; \
	$(LIVE) watch --broker $$broker --alerts-topic city/alerts & watcher=$$!; \
	sleep 8; \
	echo "live: $(SURGE_DAY) 10:30-11:30 at 60x (a minute of the city a second)"; \
	$(BIN)/citylake replay --broker $$broker --pings $(DEMO_CITY)/pings.csv --readings $(DEMO_CITY)/readings.csv \
	  --from $(SURGE_DAY)T10:30Z --to $(SURGE_DAY)T11:30Z --speed 60; \
	sleep 8; kill -TERM $$watcher $$pings $$readings; wait $$watcher $$pings $$readings || true
	@echo "the steward's alerts (exact counts, k-anonymous):"
	$(LIVE) alerts --role steward
	@echo "what analysts and planners see (crowds only through the differentially private test):"
	$(LIVE) alerts

system-deps: ## Install the system packages the tests use (Mosquitto MQTT broker, Chromium, npm) with apt-get
	@missing=""; \
	{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || missing="$$missing mosquitto"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (MQTT broker for the live-feed tests, browser for the map tests, npm for kepler.gl)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

viz-assets: system-deps ## Fetch kepler.gl and its browser libraries from the npm registry into viz/vendor (pinned)
	bash viz/fetch_assets.sh

test: $(STAMP) system-deps viz-assets ## Run the test suite (unit, property, integration and slow tests)
	$(BIN)/python -m pytest

bench: $(STAMP) ## Run the benchmarks and write bench/results.json
	$(BIN)/python -m bench --out bench/results.json

lint: $(STAMP) ## Check style with ruff
	$(BIN)/python -m ruff check citylake h3_index lake privacy ingestion queries analytics viz tests bench

clean: ## Remove the environment, demo lake and caches
	rm -rf $(VENV) $(DEMO_LAKE) $(DEMO_CITY) demo-maps demo-reports viz/vendor demo-pseudonym.key $(LIVE_LAKE) demo-live-pseudonym.key .pytest_cache .hypothesis test-artifacts bench/work
