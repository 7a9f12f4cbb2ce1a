# Herald's one entry point. Every target installs what it needs and is missing,
# so a fresh machine (Rust, Node 20 and apt available) needs nothing else:
#
#   make demo      build everything and run the demo (prints a login)
#   make test      the console's size budget, unit + integration tests, clippy,
#                  rustfmt, Playwright e2e (axe accessibility checks included),
#                  a real Synapse accepting Herald's signed requests, Herald
#                  attached to a real Synapse on SQLite and PostgreSQL, and
#                  schemathesis fuzzing the API against its OpenAPI document
#   make release   target/release/herald with the console embedded (and the demo)
#   make site      the console's site only (target/site)
#   make tools     the build and test tools only
#
# Installs are skipped when the right version is present; see
# /work/shared/BUILD.md's notes for why each tool comes from where it does.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

export PATH := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin:$(PATH)
export CARGO_TERM_PROGRESS_WHEN ?= never

# wasm-bindgen-cli must equal the wasm-bindgen library in Cargo.lock.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/"/, "", $$3); print $$3; exit}' Cargo.lock)
BINARYEN_VERSION := 132
TOOLS := .tools
WASM_OPT := $(TOOLS)/node_modules/.bin/wasm-opt
CHROMIUM_PATH ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
HERALD := target/release/herald

.PHONY: help demo test release release-prod site tools build-tools e2e-tools synapse-venv lint unit e2e instances-e2e interop attached fuzz size clean-site bench-console alerts

help:
	@sed -n '1,12p' Makefile | sed 's/^# \{0,1\}//'

## Tools ---------------------------------------------------------------------

tools: build-tools e2e-tools synapse-venv

# What the attached-mode and import tests need: Synapse 1.163 and psycopg2 in
# .tools/synapse-venv (to create a real Synapse schema), PostgreSQL's binaries
# (each test starts a throwaway cluster).
synapse-venv:
	scripts/synapse-schema.sh

# What building the site needs: the wasm32 target, wasm-bindgen, wasm-opt.
build-tools:
	@command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs)"; exit 1; }
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 or later"; exit 1; }
	@rustup target list --installed | grep -qx wasm32-unknown-unknown \
	  || rustup target add wasm32-unknown-unknown
	@[ -n "$(WASM_BINDGEN_VERSION)" ] || { echo "no wasm-bindgen in Cargo.lock"; exit 1; }
	@if [ "$$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $(WASM_BINDGEN_VERSION)" ]; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) (about 3 minutes)"; \
	  cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --force; \
	fi
	@# Debian's binaryen (108) makes modules Chromium rejects; npm's 132 runs on node.
	@if ! "$(WASM_OPT)" --version 2>/dev/null | grep -q "version $(BINARYEN_VERSION)"; then \
	  npm install --prefix $(TOOLS) --no-audit --no-fund --no-save binaryen@$(BINARYEN_VERSION).0.0; \
	fi

# What the end-to-end tests need: Chromium, python3 (to seed the database),
# and @playwright/test (which downloads no browser).
e2e-tools: end2end/node_modules/.package-lock.json
	@if [ ! -x "$(CHROMIUM_PATH)" ] || ! command -v python3 >/dev/null; then \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium python3; \
	fi

end2end/node_modules/.package-lock.json: end2end/package.json end2end/package-lock.json
	cd end2end && npm ci --no-audit --no-fund
	@touch $@

## Builds --------------------------------------------------------------------

site: build-tools
	WASM_OPT="$(abspath $(WASM_OPT))" scripts/build-site.sh

# The site is embedded at compile time, so it is built first.
release: site
	cargo build --release -p herald
	@ls -l $(HERALD)

# Without `herald demo` (no simulated homeservers, no rcgen).
release-prod: site
	cargo build --release -p herald --no-default-features
	@ls -l $(HERALD)

demo: release
	$(HERALD) demo

## Tests ---------------------------------------------------------------------

test: tools site size lint unit alerts release e2e instances-e2e interop attached fuzz
	@echo "make test: all passed"

# The shipped alert rules and dashboard (contrib/): promtool checks the rules
# (Debian's `prometheus` package, installed when missing), and a test checks
# that every series they use is in a scrape of the real binary.
alerts:
	@command -v promtool >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends prometheus; }
	promtool check rules contrib/prometheus/herald-alerts.yml
	cargo test -p herald --test contrib

lint:
	@for c in rustfmt clippy; do \
	  rustup component list --installed | grep -q "^$$c" || rustup component add $$c; \
	done
	python3 scripts/check-layers.py
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	@# The production build (no demo) compiles and is lint-clean too.
	cargo clippy -p herald --no-default-features -- -D warnings
	@# The hydrate side of the app only compiles for the browser.
	cargo clippy -p herald-app --lib --target wasm32-unknown-unknown --no-default-features \
	  --features hydrate --target-dir target/front -- -D warnings
	cargo clippy -p herald-app --lib --target wasm32-unknown-unknown --no-default-features \
	  --features hydrate,full --target-dir target/front -- -D warnings

unit: synapse-venv
	cargo test --workspace

e2e: e2e-tools
	@[ -x $(HERALD) ] || { echo "$(HERALD) is missing: run make release"; exit 1; }
	cd end2end && CHROMIUM_PATH="$(CHROMIUM_PATH)" npx playwright test

# Two instances on one throwaway PostgreSQL (scripts/pg-cluster.sh), the
# console of one in Chromium: both shown with their shards, then one killed
# and the other shown holding every shard (end2end/instances/).
instances-e2e: e2e-tools
	@[ -x $(HERALD) ] || { echo "$(HERALD) is missing: run make release"; exit 1; }
	cd end2end && CHROMIUM_PATH="$(CHROMIUM_PATH)" npx playwright test --config instances.config.ts

# Herald against a real Synapse 1.163 on loopback (installed from PyPI into
# .tools/synapse-venv on first use, about a minute).
interop:
	@[ -x $(HERALD) ] || { echo "$(HERALD) is missing: run make release"; exit 1; }
	@command -v openssl >/dev/null || $(SUDO) apt-get install -y openssl
	scripts/synapse-interop.sh $(HERALD)

# Herald attached to a real Synapse 1.163 (`[synapse]`), once on SQLite and
# once on PostgreSQL (a throwaway cluster, scripts/pg-cluster.sh): Synapse's
# admin signs in in Chromium, the non-admin is refused, a reset goes through
# Synapse, a row Synapse changes shows within the refresh delay.
attached: e2e-tools synapse-venv
	@[ -x $(HERALD) ] || { echo "$(HERALD) is missing: run make release"; exit 1; }
	scripts/synapse-attached.sh $(HERALD) sqlite postgresql

# Schemathesis against the release binary and the OpenAPI document it serves
# (installed from PyPI into .tools/schemathesis-venv on first use): no server
# error, every status, content type and body as documented. About 2 minutes.
fuzz:
	@[ -x $(HERALD) ] || { echo "$(HERALD) is missing: run make release"; exit 1; }
	scripts/api-fuzz.sh $(HERALD)

# Transfer sizes of the console (gzip -9), after `make site`; fails when
# what every page loads first (WASM + JS + CSS, the same on every page: one
# module) is over $(SIZE_BUDGET) bytes. What each page costs in the browser,
# document and API answers included: end2end/tests/size.spec.ts.
SIZE_BUDGET ?= 250000
size:
	@cd target/site/pkg && gz() { gzip -9c "$$1" | wc -c; } && \
	for f in herald_bg.wasm herald.js herald.css herald_full_bg.wasm herald_full.js; do \
	  printf '%-20s %8d bytes  %8d gzip -9\n' $$f $$(stat -c%s $$f) $$(gz $$f); \
	done; \
	first=$$(( $$(gz herald_bg.wasm) + $$(gz herald.js) + $$(gz herald.css) )); \
	full=$$(( $$(gz herald_full_bg.wasm) + $$(gz herald_full.js) + $$(gz herald.css) )); \
	printf '%-20s %8s        %8d gzip -9 (budget %d): sign-in, the list\n' first "" $$first $(SIZE_BUDGET); \
	printf '%-20s %8s        %8d gzip -9: a destination, the sender page (loaded when opened)\n' full "" $$full; \
	[ $$first -le $(SIZE_BUDGET) ] || { echo "the console's first page is over its size budget"; exit 1; }

# Page-change time of the console on a large database (not part of `make
# test`): seeds $(BENCH_DB) once with $(BENCH_ROWS) destinations (the admin
# API benchmark's data), adds an admin, and times changes in Chromium.
BENCH_DB ?= /tmp/herald-bench.db
BENCH_ROWS ?= 1000000
BENCH_PASSWORD := bench-console-secret
bench-console: release e2e-tools
	@[ -f $(BENCH_DB) ] || HERALD_BENCH_SEED_DB=$(BENCH_DB) HERALD_BENCH_ROWS=$(BENCH_ROWS) \
	  cargo bench -p herald --bench admin_api
	@echo $(BENCH_PASSWORD) | $(HERALD) user add console-bench --admin --password - --database $(BENCH_DB) \
	  2>/dev/null || true
	cd end2end && CHROMIUM_PATH="$(CHROMIUM_PATH)" node bench/page-change.mjs --db $(BENCH_DB) \
	  --user console-bench --password $(BENCH_PASSWORD) --bin ../$(HERALD)

clean-site:
	rm -rf target/site target/front
