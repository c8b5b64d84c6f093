# streamhost: the two commands a new machine needs are `make demo` and `make test`.
# Each installs what it needs (Debian packages, Rust wasm target, Kafka jars) on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Build caches live outside the clone, so a fresh clone reuses them (the cold build is long).
CACHE ?= $(HOME)/.cache/streamhost
export CARGO_TARGET_DIR ?= $(CACHE)/target
GUEST_TARGET_DIR ?= $(CACHE)/target-guests
GUEST_OUT := build/guests
HOST := $(CARGO_TARGET_DIR)/debug/host
LOADGEN := $(CARGO_TARGET_DIR)/debug/loadgen
GUEST ?= $(GUEST_OUT)/drink_count.wasm

export STREAMHOST_BROKERS ?= 127.0.0.1:9092
export STREAMHOST_STATE_DIR ?= ./state

APT_PACKAGES := libclang-dev libcurl4-openssl-dev libssl-dev pkg-config cmake g++ openjdk-17-jre-headless maven python3-venv
# The cluster's network cuts are iptables rules (toxiproxy, for latency, is built with Go).
CLUSTER_APT_PACKAGES := iptables
# The board page's end-to-end test drives a headless browser.
TEST_APT_PACKAGES := chromium $(CLUSTER_APT_PACKAGES)

.PHONY: bench bench-peers help deps build guests kafka-up kafka-down cluster-up cluster-down test-cluster soak topic-create-all topic-delete-all seed-orders run restore dump demo demo-scale-out test test-unit clean-state

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

deps: ## install system packages and the Rust wasm target (once)
	@missing=$$(for p in $(APT_PACKAGES) $(EXTRA_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; \
	  command -v npm >/dev/null || echo nodejs npm; command -v go >/dev/null || echo golang-go); \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

build: deps ## build the host and the load generator
	cargo build --workspace --bins

guests: deps $(GUEST_OUT)/drink_count_py.wasm $(GUEST_OUT)/drink_count_js.wasm ## build every guest component into build/guests/
	cd guests && CARGO_TARGET_DIR=$(GUEST_TARGET_DIR) cargo build --release
	@mkdir -p $(GUEST_OUT)
	@for w in $(GUEST_TARGET_DIR)/wasm32-unknown-unknown/release/*.wasm; do cp "$$w" $(GUEST_OUT)/; done
	@ls -1 $(GUEST_OUT)

# The drink count in Python (componentize-py, from PyPI) and JavaScript (componentize-js,
# from npm): rebuilt only when their sources change; the tools install on first use.
$(GUEST_OUT)/drink_count_py.wasm: scripts/build-python-guest.sh wit/counter.wit guests/python/drink_count/app.py guests/python/drink_count/drinks.py wit/processor/processor.wit guests/python/order_dedup/app.py
	scripts/build-python-guest.sh $(GUEST_OUT)

$(GUEST_OUT)/drink_count_js.wasm: scripts/build-js-guest.sh wit/counter.wit guests/js/package-lock.json guests/js/componentize.mjs $(wildcard guests/js/drink_count/*.js)
	scripts/build-js-guest.sh $(GUEST_OUT)

kafka-up: ## fetch (first time) and start a local single-node Kafka broker
	scripts/kafka.sh up

kafka-down: ## stop the local broker
	scripts/kafka.sh down

cluster-up: EXTRA_APT_PACKAGES = $(CLUSTER_APT_PACKAGES)
cluster-up: deps ## fetch (first time) and start a three-broker KRaft cluster on 127.0.0.1:29092-29094
	scripts/kafka.sh cluster up

cluster-down: ## stop the three-broker cluster
	scripts/kafka.sh cluster down

topic-create-all: build kafka-up ## create input, changelog (compacted) and output topics
	$(HOST) create-topics

topic-delete-all: build ## delete them
	$(HOST) delete-topics

seed-orders: build ## a dozen test orders per second, until Ctrl+C
	$(LOADGEN) seed --rate 12

run: build guests ## run the host with the drink_count guest
	$(HOST) run --guest $(GUEST)

restore: build ## rebuild ./state from the changelog
	$(HOST) restore

dump: build ## print ./state as JSON lines
	$(HOST) dump

clean-state: ## delete ./state
	rm -rf $(STREAMHOST_STATE_DIR)

demo: build guests kafka-up ## everything: broker, topics, seeded orders, the live board (Ctrl+C stops)
	scripts/demo.sh $(HOST) $(LOADGEN) $(GUEST)

demo-scale-out: build guests kafka-up ## three --scale-out hosts share one job; the global board every 5 s (Ctrl+C stops)
	scripts/demo-scale-out.sh $(HOST) $(LOADGEN) $(GUEST)

test: EXTRA_APT_PACKAGES = $(TEST_APT_PACKAGES)
test: build guests kafka-up cluster-up ## all tests: unit, guest, integration against the real broker, and the cluster's faults
	scripts/test.sh
	scripts/test-cluster.sh

soak: EXTRA_APT_PACKAGES = $(CLUSTER_APT_PACKAGES)
soak: build guests cluster-up ## SOAK_MINUTES (30) of random host/broker kills and network cuts against the cluster, exactly-once, then an exact check; report in build/soak-report.md
	STREAMHOST_GUEST_DIR=$(CURDIR)/build/guests STREAMHOST_HOST_BIN=$(HOST) \
	  cargo test -p integration-tests --features cluster --test cluster_soak -- --nocapture

test-cluster: EXTRA_APT_PACKAGES = $(CLUSTER_APT_PACKAGES)
test-cluster: build guests cluster-up ## broker and network faults (leader and controller kills, rolling restart, cuts, latency) against the three-broker cluster
	scripts/test-cluster.sh

bench: deps guests kafka-up ## benchmark (release build): raw / native / wasm / restore / latency -> bench/RESULTS.md
	cargo build --release --workspace --bins
	python3 bench/bench.py

bench-peers: deps guests kafka-up ## the benchmark plus Kafka Streams and the seed's Go design, same broker and data
	cargo build --release --workspace --bins
	cd bench/peers/go-seed && go build -o $(CACHE)/peers/go-seed .
	cd bench/peers/kstreams && mvn -q -B package -Dmaven.test.skip=true && \
	  mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CACHE)/peers/kstreams-deps
	CACHE=$(CACHE) python3 bench/bench.py --peers
