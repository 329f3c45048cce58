# velostream: the two commands of the README, and a few helpers.
#   make run    - the main job: local Kafka + ClickHouse up, then the benchmark DAG
#   make test   - every test, integration tests included (installs what they need first)
.PHONY: run test install up down status lint bench

CARGO ?= cargo

install:
	./infrastructure/local/velostream-local install

test: install
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --all-targets --no-tests=fail; \
	else \
		$(CARGO) test --workspace --all-targets; \
	fi

up: install
	./infrastructure/local/velostream-local up

down:
	./infrastructure/local/velostream-local down

status:
	./infrastructure/local/velostream-local status

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps
