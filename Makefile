# Waybill developer commands. `make help` lists them.

CARGO ?= cargo
PORT ?= 8080

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: dev
dev: ## Build and run everything in one process on an embedded broker (API on :8080)
	$(CARGO) run --locked -q -p waybill -- dev --port $(PORT)

.PHONY: listen
listen: ## Run a local webhook receiver on :9000 that prints what arrives
	$(CARGO) run --locked -q -p waybill -- listen --port 9000

.PHONY: build
build: ## Build every crate
	$(CARGO) build --locked --workspace

.PHONY: kafka
kafka: ## Fetch the Apache Kafka broker's jars for end-to-end tests (Maven; cached in ~/.cache/waybill)
	scripts/ensure-kafka.sh

.PHONY: test
test: ## Run every test: unit, in-process (embedded broker), the portal in headless Chromium, end-to-end and chaos (Apache Kafka + 3 processes), deploy checks, a short API fuzz run
	scripts/ensure-browser.sh
	WAYBILL_KAFKA_LIBS="$$(scripts/ensure-kafka.sh)" WAYBILL_JAEGER="$$(scripts/ensure-go-tools.sh)/jaeger" $(CARGO) test --locked --workspace
	$(MAKE) check-deploy
	$(MAKE) fuzz-api FUZZ_SECONDS=20

.PHONY: fuzz-api
fuzz-api: ## Fuzz the HTTP API with schemathesis against a fresh waybill dev (FUZZ_SECONDS per pass, default 600)
	$(CARGO) build --locked -q -p waybill
	scripts/fuzz-api.sh "$${CARGO_TARGET_DIR:-target}/debug/waybill" $(or $(FUZZ_SECONDS),600)

.PHONY: check-deploy
check-deploy: ## Render, lint, schema-validate and scan the Helm chart; check compose.yaml against the binary
	$(CARGO) build --locked -q -p waybill
	"$$(scripts/ensure-deploy-tools.sh)" scripts/chart-docs.py --check
	"$$(scripts/ensure-deploy-tools.sh)" scripts/check-deploy.py "$${CARGO_TARGET_DIR:-target}/debug/waybill" "$$(scripts/ensure-go-tools.sh)"

.PHONY: e2e
e2e: ## Run only the end-to-end tests on Apache Kafka
	WAYBILL_KAFKA_LIBS="$$(scripts/ensure-kafka.sh)" WAYBILL_JAEGER="$$(scripts/ensure-go-tools.sh)/jaeger" $(CARGO) test --locked -p waybill --test e2e_kafka

.PHONY: chaos
chaos: ## Chaos runs on Apache Kafka + 3 processes (SCENARIO=kill_matcher|kill_delivery|kill_ingest|restart_broker|kill_partition_leader|rolling_restart|receiver_resets, default all)
	scripts/chaos.sh $(or $(SCENARIO),all)

.PHONY: bench
bench: ## Load benchmark W1..W4 against waybill dev, 3 runs each (release build); writes bench-results.json
	$(CARGO) build --locked --release -p waybill
	RUST_LOG=error "$${CARGO_TARGET_DIR:-target}/release/waybill" bench --runs 3 --out bench-results.json

.PHONY: lint
lint: ## Check formatting and clippy (as CI does)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: latency
latency: ## Measure POST /v1/events → arrival latency (median of 100) in the dev stack; writes target/latency.json
	$(CARGO) run --locked -q -p waybill --example dev_latency -- 100 target/latency.json

.PHONY: ci
ci: ## Run what CI runs
	bash .ci/run
