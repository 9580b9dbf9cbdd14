# omnistream: `make demo` runs the pipeline locally, `make test` runs every test.
# Both start the local Kafka broker (assembled from Maven Central jars) when it is not running;
# set KAFKA_BOOTSTRAP_SERVERS to use an existing cluster instead.

SHELL := /bin/bash
CARGO ?= cargo
KAFKA := deploy/local/kafka.sh
OMNI := target/release/omni
PARTITIONS ?= 6
DEMO_SECONDS ?= 20
DEMO_RATE ?= 50

.PHONY: help build kafka-up kafka-down kafka-status topics demo test lint down bench

help:
	@echo "make demo          start Kafka, create topics, run profile-updater, simulate customers, tail profiles"
	@echo "make test          fmt, clippy and every test (starts Kafka when needed)"
	@echo "make kafka-up      start the local broker (kafka-down, kafka-status)"
	@echo "make topics        create the pipeline topics (PARTITIONS=$(PARTITIONS))"
	@echo "make bench         benchmarks (BENCH_ARGS=--help for options)"
	@echo "make down          stop everything local"

build:
	$(CARGO) build --release --workspace --bins

kafka-up:
	@bash $(KAFKA) up

kafka-down:
	@bash $(KAFKA) down

kafka-status:
	@bash $(KAFKA) status

topics: kafka-up build
	$(OMNI) topics create --partitions $(PARTITIONS)

demo: topics
	@echo "== profile-updater folds every event into customer.profiles.v1 (log: target/demo-profile-updater.log)"
	@echo "== suppression keeps customer.suppressions.v1 (log: target/demo-suppression.log)"
	@echo "== channel-affinity keeps customer.channel-affinity.v1 (log: target/demo-channel-affinity.log)"
	@echo "== loyalty-points keeps loyalty.ledger.v1 and loyalty.balances.v1 (log: target/demo-loyalty-points.log)"
	@echo "== simulating $(DEMO_RATE) events/s for $(DEMO_SECONDS)s over 200 customers; tailing profiles, suppressions, channel affinities, then the points ledger"
	@target/release/profile-updater --instance-id demo > target/demo-profile-updater.log 2>&1 & \
	  profiles=$$!; \
	  target/release/suppression --instance-id demo > target/demo-suppression.log 2>&1 & \
	  suppression=$$!; \
	  target/release/channel-affinity --instance-id demo > target/demo-channel-affinity.log 2>&1 & \
	  affinity=$$!; \
	  target/release/loyalty-points --instance-id demo > target/demo-loyalty-points.log 2>&1 & \
	  loyalty=$$!; \
	  $(OMNI) simulate --rate $(DEMO_RATE) --duration $(DEMO_SECONDS) --customers 200 --malformed 0.01 & \
	  sim=$$!; \
	  trap 'kill $$sim 2>/dev/null; kill -TERM $$profiles $$suppression $$affinity $$loyalty 2>/dev/null; wait $$profiles $$suppression $$affinity $$loyalty' INT TERM EXIT; \
	  $(OMNI) tail customer.profiles.v1 -n 10 --timeout $$(( $(DEMO_SECONDS) / 4 )) | cut -c1-220; \
	  $(OMNI) tail customer.suppressions.v1 -n 10 --timeout $$(( $(DEMO_SECONDS) / 4 )) | cut -c1-220; \
	  $(OMNI) tail customer.channel-affinity.v1 -n 10 --timeout $$(( $(DEMO_SECONDS) / 4 )) | cut -c1-220; \
	  $(OMNI) tail loyalty.ledger.v1 -n 10 --timeout $$(( $(DEMO_SECONDS) / 4 )) | cut -c1-220; \
	  wait $$sim

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

test: kafka-up lint
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release --workspace

down: kafka-down

# Benchmarks are a command, not a timed test: throughput against a same-run baseline, latency
# percentiles, memory and restore time; the table is kept under bench/results/.
bench: kafka-up build
	target/release/omnistream-bench $(BENCH_ARGS)
