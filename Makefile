# velostream: the two commands of the README, and a few helpers.
#   make run    - the main job: local Kafka + ClickHouse up, then the benchmark DAG
#   make test   - every test, integration tests included (installs what they need first)
.PHONY: run test install up down status lint bench

CARGO ?= cargo
# Extra arguments for `make run`, e.g. ARGS="--param repeat=440" for the reference run's 44M rows.
ARGS ?=

install:
	./infrastructure/local/velostream-local install

run:
	$(CARGO) build --release --workspace --bins
	./target/release/orchestrator run dags/velostream_benchmark.toml $(ARGS)

test: install
	# The end-to-end tests spawn the producer and consumer binaries: build them first.
	$(CARGO) build --workspace --bins --all-features
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --all-features --no-tests=fail; \
	else \
		$(CARGO) test --workspace --all-features; \
	fi

up: install
	./infrastructure/local/velostream-local up

down:
	./infrastructure/local/velostream-local down

status:
	./infrastructure/local/velostream-local status

# The benchmark: the pipeline beside its baselines, written to docs/BENCHMARKS.md, e.g.
#   make bench ARGS="--rows 10000000 --also-pipeline-rows 44000000"
bench:
	$(CARGO) run --release -p velostream-bench -- $(ARGS)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --all-features
