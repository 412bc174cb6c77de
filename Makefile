# pg_tenancy: `make demo` and `make test` do everything on a fresh machine.
# Run `make help` for the other targets.

SHELL      := /bin/bash
PG_MAJOR   ?= 15
PG_CONFIG  ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
# Build profile for the installed extension and the CLI: release for the demo and benchmarks;
# `make test` uses dev builds, which compile much faster.
PROFILE    ?= release
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,--profile $(PROFILE))
TARGET_DIR := $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
TENANCY    := target/$(TARGET_DIR)/tenancy
ROOT       := $(shell [ "$$(id -u)" = 0 ] && echo yes)
# What the postgres OS user must reach lives here (target/, or /tmp when it cannot reach us).
STATE_DIR  := $(shell scripts/state-dir.sh)
PGRX_RUNAS := $(if $(ROOT),--runas postgres --pgdata $(STATE_DIR)/pgrx-test/data,)
# cargo-pgrx's settings for this checkout: `cargo pgrx test` installs its test build into a
# private copy of PostgreSQL (scripts/pg-tree.sh), never into the system's.
export PGRX_HOME := $(STATE_DIR)/pgrx-home

.PHONY: help setup install cli demo test lint-rust test-compiler test-extension test-e2e pyenv bench \
        psql db-url db-admin-url stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: ## install what is missing (apt packages, cargo-pgrx, pgrx init); idempotent
	@scripts/setup.sh

install: setup ## build the extension and install it into PostgreSQL $(PG_MAJOR) (a running server survives)
	scripts/install.sh --profile $(PROFILE) --pg-config $(PG_CONFIG)

cli: ## build the `tenancy` compiler CLI
	cargo build $(CARGO_PROFILE_FLAG) -p pg_tenancy_compiler --bin tenancy

demo: install cli ## start a local cluster (port 28815) and show two organizations kept apart
	scripts/cluster.sh restart demo
	TENANCY=$(TENANCY) scripts/demo.sh

test: ## run every test: formatting, clippy, compiler, extension (pgrx), end-to-end against a real cluster
	$(MAKE) setup
	$(MAKE) lint-rust
	$(MAKE) test-compiler
	$(MAKE) test-extension
	$(MAKE) test-e2e PROFILE=dev

lint-rust: ## cargo fmt --check and cargo clippy -D warnings on every crate
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test-compiler: ## compiler unit, golden and CLI tests (no database needed)
	cargo test -p pg_tenancy_compiler

test-extension: setup ## pgrx tests inside PostgreSQL
	@if [ -n "$(ROOT)" ]; then mkdir -p $(STATE_DIR)/pgrx-test && chown postgres: $(STATE_DIR)/pgrx-test; fi
	cd extension && cargo pgrx test pg$(PG_MAJOR) $(PGRX_RUNAS)

pyenv: ## a Python venv with psycopg under target/, for examples/python_app.py
	@[ -x target/pyenv/bin/python ] || python3 -m venv target/pyenv
	@target/pyenv/bin/python -c 'import psycopg' 2>/dev/null || target/pyenv/bin/pip install --quiet 'psycopg[binary]>=3.1,<4'

test-e2e: setup ## end-to-end tests against a throwaway cluster (port 28816), from a private copy of PostgreSQL
	scripts/install.sh --profile $(PROFILE) --pg-config "$$(scripts/pg-tree.sh test)"
	$(MAKE) pyenv
	scripts/cluster.sh destroy test >/dev/null
	scripts/cluster.sh start test
	TENANCY_TEST_ADMIN_URL="$$(scripts/cluster.sh admin-url test)" \
	TENANCY_TEST_APP_URL="$$(scripts/cluster.sh url test)" \
	  cargo test $(CARGO_PROFILE_FLAG) --no-fail-fast -p pg_tenancy_e2e -- --test-threads=4; \
	  status=$$?; scripts/cluster.sh stop test; exit $$status

bench: install cli ## benchmarks (RLS, quotas, usage, context readers, verify) on their own cluster (port 28817); Markdown tables
	scripts/cluster.sh restart bench
	{ bench/rls.sh && echo && bench/quota_usage.sh && echo && bench/context.sh && echo && bench/instructions.sh && echo && bench/verify.sh; } | tee target/bench-results.md; \
	  status=$${PIPESTATUS[0]}; scripts/cluster.sh stop bench; exit $$status

psql: ## psql into the demo cluster as the application role (PSQL_ROLE=postgres for the DBA)
	@scripts/cluster.sh psql demo

db-url: ## libpq URL of the demo cluster for the application role
	@scripts/cluster.sh url demo

db-admin-url: ## libpq URL of the demo cluster for the superuser (DBA)
	@scripts/cluster.sh admin-url demo

stop: ## stop the demo cluster
	@scripts/cluster.sh stop demo

clean: ## stop and delete local clusters and build output
	-@scripts/cluster.sh destroy demo
	-@scripts/cluster.sh destroy test
	-@scripts/cluster.sh destroy bench
	cargo clean
	rm -rf $(STATE_DIR)
