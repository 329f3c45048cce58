# velostream: the two commands of the README, and a few helpers.
#   make run    - the main job: local Kafka + ClickHouse up, then the benchmark DAG
#   make test   - every test, integration tests included (installs what they need first), on the
#                 modern ClickHouse lane, then every ClickHouse-touching test again on the legacy lane
#
# VELOSTREAM_CLICKHOUSE=modern|legacy picks the ClickHouse of `make run`, `make up` and `make bench`
# (modern, ClickHouse 26.9, by default; legacy is Debian's 18.16).
.PHONY: run test install up down status lint bench

CARGO ?= cargo
# Extra arguments for `make run`, e.g. ARGS="--param repeat=440" for the reference run's 44M rows.
ARGS ?=

install:
	./infrastructure/local/velostream-local install --for-tests

run:
	$(CARGO) build --release --workspace --bins
	./target/release/orchestrator run dags/velostream_benchmark.toml $(ARGS)

test: install
	# The end-to-end tests spawn the producer and consumer binaries: build them first.
	$(CARGO) build --workspace --bins --all-features
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "make test: ClickHouse lane modern (26.9): every test" && \
		VELOSTREAM_CLICKHOUSE=modern $(CARGO) nextest run --workspace --all-features --no-tests=fail && \
		echo "make test: ClickHouse lane modern (26.9): passed" && \
		echo "make test: ClickHouse lane legacy (18.16): every test that starts ClickHouse (.config/nextest.toml)" && \
		VELOSTREAM_CLICKHOUSE=legacy $(CARGO) nextest run --workspace --all-features --profile clickhouse-legacy --no-tests=fail && \
		echo "make test: ClickHouse lane legacy (18.16): passed"; \
	else \
		echo "make test: ClickHouse lane modern (26.9): every test" && \
		VELOSTREAM_CLICKHOUSE=modern $(CARGO) test --workspace --all-features && \
		echo "make test: ClickHouse lane legacy (18.16): every test" && \
		VELOSTREAM_CLICKHOUSE=legacy $(CARGO) test --workspace --all-features; \
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
