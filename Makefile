# omnistream: `make demo` runs the pipeline locally, `make test` runs every test.
# Both start the local Kafka broker (assembled from Maven Central jars) when it is not running;
# set KAFKA_BOOTSTRAP_SERVERS to use an existing cluster instead.

SHELL := /bin/bash
CARGO ?= cargo
KAFKA := deploy/local/kafka.sh
REGISTRY := deploy/local/registry.sh
JAEGER := deploy/local/jaeger.sh
OMNI := target/release/omni
PARTITIONS ?= 6
DEMO_SECONDS ?= 30
DEMO_RATE ?= 50

.PHONY: bench-instructions chaos fuzz py-deps browser-deps help build kafka-up kafka-down kafka-status kafka-prune kafka-reset registry-up registry-down registry-status jaeger-up jaeger-down jaeger-status topics demo test lint k8s-check down bench

help:
	@echo "make demo          start Kafka and the whole pipeline, publish simulated customers through the gateway, watch them via the API"
	@echo "make test          fmt, clippy, the Kubernetes manifests check and every test (starts Kafka when needed)"
	@echo "make k8s-check     render the Kubernetes overlays and validate them offline"
	@echo "make kafka-up      start the local broker (kafka-down, kafka-status; kafka-prune deletes test topics, kafka-reset all data)"
	@echo "                   BROKERS=3: a replicated 3-node cluster instead (127.0.0.1:19091-19093)"
	@echo "make registry-up   start the local schema registry, Apicurio (registry-down, registry-status; SCHEMA_REGISTRY_URL uses yours)"
	@echo "make jaeger-up     start a local Jaeger (OTLP on :4318, query API on :16686) for OTEL_EXPORTER_OTLP_ENDPOINT (jaeger-down, jaeger-status)"
	@echo "make topics        create the pipeline topics (PARTITIONS=$(PARTITIONS))"
	@echo "make bench         benchmarks (BENCH_ARGS=--help for options)"
	@echo "make bench-instructions  instructions per event of each service's hot path, counted by callgrind (no Kafka)"
	@echo "make chaos         the pipeline on a 3-broker cluster under CHAOS_FAULTS (50) faults of every kind, checked against the SPEC"
	@echo "make fuzz          every fuzz target for FUZZ_SECONDS (600) each, with cargo-fuzz and the nightly toolchain"
	@echo "make down          stop everything local"

build:
	$(CARGO) build --release --workspace --bins

kafka-up:
	@bash $(KAFKA) up

kafka-down:
	@bash $(KAFKA) down

kafka-status:
	@bash $(KAFKA) status

# Tests and benchmarks create uniquely named topics; on a long-lived dev broker they pile up, and a
# broker with thousands of partitions takes minutes to start. `make test` prunes before and after.
kafka-prune:
	@bash $(KAFKA) prune

kafka-reset:
	@bash $(KAFKA) reset

registry-up:
	@bash $(REGISTRY) up

registry-down:
	@bash $(REGISTRY) down

registry-status:
	@bash $(REGISTRY) status

jaeger-up:
	@bash $(JAEGER) up

jaeger-down:
	@bash $(JAEGER) down

jaeger-status:
	@bash $(JAEGER) status

topics: kafka-up build
	$(OMNI) topics create --partitions $(PARTITIONS)

# DEMO_REGISTRY=1: the Confluent wire format through the local schema registry (and the stock
# Python client that reads it back, from py-deps).
demo: topics $(if $(filter 1,$(DEMO_REGISTRY)),py-deps)
	@DEMO_RATE=$(DEMO_RATE) DEMO_SECONDS=$(DEMO_SECONDS) bash deploy/local/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	@# unsafe_code is denied, not forbidden, so that two modules may call C: the allocators, and
	@# librdkafka's per-topic configuration, which rust-rdkafka does not expose.
	@if grep -rl --include='*.rs' 'allow(unsafe_code)' crates \
		| grep -qvE '^crates/runtime/src/(memory|topic_codec)\.rs$$'; then \
		echo "lint: unsafe code is allowed only in crates/runtime/src/memory.rs and topic_codec.rs"; exit 1; fi

# Renders the Kubernetes overlays and validates them offline against the vendored schemas.
k8s-check:
	bash deploy/k8s/validate.sh

# fastavro (PyPI), the independent Avro library the interop test decodes every topic with.
FASTAVRO_VERSION := 1.13.1
# confluent-kafka (PyPI), the stock Confluent client the schema registry test publishes and reads with.
CONFLUENT_KAFKA_VERSION := 2.16.1
# schemathesis (PyPI) checks the HTTP servers' answers against their OpenAPI documents.
SCHEMATHESIS_VERSION := 4.32.5
py-deps:
	@target/py/bin/python3 -c 'import fastavro, confluent_kafka.schema_registry.avro, schemathesis' 2>/dev/null || { python3 -m venv target/py && \
	  target/py/bin/pip install --quiet --disable-pip-version-check fastavro==$(FASTAVRO_VERSION) \
	    "confluent-kafka[avro,schemaregistry]==$(CONFLUENT_KAFKA_VERSION)" schemathesis==$(SCHEMATHESIS_VERSION); }

# Debian's headless Chromium and its WebDriver, for the customer 360 page's browser test.
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

test: kafka-up kafka-prune lint k8s-check py-deps browser-deps
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release --workspace
	@bash $(KAFKA) prune

down:
	@bash deploy/local/demo-down.sh
	@bash $(KAFKA) down
	@bash $(REGISTRY) down
	@bash $(JAEGER) down

# Fuzzing (issue 20): each target of crates/fuzz-targets under libFuzzer for FUZZ_SECONDS, with
# the nightly toolchain and cargo-fuzz (installed once). New inputs go to target/fuzz-corpus/; a
# crash is left in fuzz/artifacts/<target>/: fix it and keep the input in fuzz/regressions/<target>/
# (make test replays every one). FUZZ_TARGETS picks some.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= touchpoint_avro touchpoint_json gateway_body rules_files changelog_state
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@# librdkafka is built with CMake there (fuzz/Cargo.toml says why), which needs libcurl's headers.
	@test -n "$$(ls /usr/include/curl/curl.h /usr/include/*/curl/curl.h 2>/dev/null)" || \
	  { apt-get update -qq && apt-get install -y -qq libcurl4-openssl-dev; }
	@for target in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$target; \
	  echo "== fuzz $$target for $(FUZZ_SECONDS) s (log: target/fuzz-$$target.log)"; \
	  (cd fuzz && $(CARGO) +nightly fuzz run $$target ../target/fuzz-corpus/$$target corpus/$$target \
	    -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 >../target/fuzz-$$target.log 2>&1) \
	    || { tail -40 target/fuzz-$$target.log; echo "fuzz: $$target failed; the input is in fuzz/artifacts/$$target/"; exit 1; }; \
	  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" target/fuzz-$$target.log; \
	done

# Benchmarks are a command, not a timed test: throughput against a same-run baseline, latency
# percentiles, memory and restore time; the table is kept under bench/results/.
bench: kafka-up build
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) \
	  || { echo "make bench needs wrk (the HTTP load generator): apt-get install wrk"; exit 1; }
	target/release/omnistream-bench $(BENCH_ARGS)

# Instructions per event of each service's hot path without Kafka, counted by callgrind: exact
# repeats for the same binary, unlike wall time here (issue 21).
bench-instructions:
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
	$(CARGO) build --release -p omnistream-bench --bin omnistream-hot-path
	@bash bench/instructions.sh

# Chaos (issue 20): the whole pipeline on a fresh 3-node cluster of its own (target/chaos; the
# BROKERS=3 dev cluster shares its ports and is stopped first) under CHAOS_FAULTS faults of every
# kind; the report goes to bench/results/<date>-chaos.md. Needs root for node 3's loop-mounted
# disk (without it the disk faults are reported as unavailable). CHAOS_ARGS: e.g. --sequential.
CHAOS_FAULTS ?= 50
CHAOS_SEED ?= 1
CHAOS_ARGS ?=
chaos: build
	@BROKERS=3 bash $(KAFKA) down
	@mkdir -p bench/results
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19091,127.0.0.1:19092,127.0.0.1:19093 target/release/omnistream-chaos \
	  --faults-per-kind $(CHAOS_FAULTS) --seed $(CHAOS_SEED) --report bench/results/$$(date -u +%F)-chaos$(if $(CHAOS_ARGS),-$(subst -,,$(subst $(eval) ,,$(CHAOS_ARGS))),).md $(CHAOS_ARGS)
