# Millions — one machine, the whole system.
#
#   make up     install what is missing, build, start the system
#   make test   install what is missing, run the whole test suite
#
# Other targets: setup, build, down, status, bench, fuzz, clean.

CARGO ?= cargo
MILLIONS := ./target/release/millions

# rustup installs into ~/.cargo/bin, which a fresh shell may not have on PATH.
ifeq ($(shell command -v $(CARGO)),)
ifneq ($(wildcard $(HOME)/.cargo/bin/cargo),)
export PATH := $(HOME)/.cargo/bin:$(PATH)
endif
endif

# --locked only once Cargo.lock exists (a checkout without it must still build).
LOCKED := $(if $(wildcard Cargo.lock),--locked,)

# CI: plain logs, no incremental cache (a fresh checkout every run), backtraces.
ifeq ($(CI),true)
export CARGO_TERM_COLOR := never
export CARGO_INCREMENTAL := 0
export RUST_BACKTRACE := 1
endif

.DEFAULT_GOAL := help
.PHONY: help setup setup-test build up down status test fuzz bench clean

# Print the two commands that matter.
help:
	@echo "make up     install what is missing, build, and start Millions (then open the printed address)"
	@echo "make test   install what is missing, then fmt check, clippy and the whole test suite"
	@echo "make fuzz   run every fuzz target with many more cases (FUZZ_CASES=$(FUZZ_CASES) each)"
	@echo "            (also: make down | status | build | setup | bench | clean)"

# Install missing Debian packages (PostgreSQL, Redis, cmake, ...), check Rust, and
# fetch uPlot for the dashboard from npm into .cache/ (checked against its pin).
setup:
	@bash scripts/setup.sh

# Setup, plus the rustfmt and clippy components that the checks need.
setup-test:
	@bash scripts/setup.sh test

# Build the one binary, optimized.
build: setup
	$(CARGO) build --release $(LOCKED) -p millions

# Build, then start the whole topology; it prints where to open the app.
up: build
	$(MILLIONS) up

# Stop everything `make up` started.
down:
	@if [ -x $(MILLIONS) ]; then $(MILLIONS) down; else echo "make: $(MILLIONS) not built; nothing to stop"; fi

# Show what is running.
status:
	@if [ -x $(MILLIONS) ]; then $(MILLIONS) status; else echo "make: $(MILLIONS) not built; nothing running"; fi

# Formatting, lints (warnings are errors), then every test (debug profile).
# One cargo test process runs each test binary, whose tests share one PostgreSQL
# and one Redis: that is why this is cargo test, not nextest.
test: setup-test
	@echo "make: cargo fmt --check"
	@$(CARGO) fmt --all -- --check
	@echo "make: cargo clippy"
	@$(CARGO) clippy --quiet --workspace --all-targets $(LOCKED) -- -D warnings
	@echo "make: cargo test"
	@$(CARGO) test --quiet --workspace $(LOCKED)
	@echo "make: all checks passed"

# The property-based fuzz targets (docs/SECURITY.md): the load balancer's HTTP/1
# heads, framing and chunked decoder, the upload validator, cursors and ids, the
# topology and configuration files. `make test` runs each with PROPTEST_CASES
# (256 by default; the image decoding ones a quarter of it); this runs them with
# FUZZ_CASES. A failure prints the smallest input found: add it as a plain test.
FUZZ_CASES ?= 20000
fuzz: setup-test
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test $(LOCKED) -p lb --lib h1::fuzz
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test $(LOCKED) -p lb -p web -p media -p topology -p sharding --test fuzz
	@echo "make: every fuzz target passed $(FUZZ_CASES) cases"

# Load the web tier with wrk (the release build must be up to date).
bench: build
	@test -f scripts/bench-web.sh || { echo "make: scripts/bench-web.sh not written yet" >&2; exit 1; }
	bash scripts/bench-web.sh

# Remove build output (the running system's state in .millions/ is kept).
clean:
	$(CARGO) clean
