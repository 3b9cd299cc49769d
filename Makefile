# Breakwater: `make demo` runs the demo (`make demo-cluster` on three nodes), `make test`
# runs every test. Both install what
# is missing first (Erlang/OTP 25, Elixir 1.14 and PropEr from Debian's packages); the
# only thing a machine needs beforehand is a Rust toolchain.

SHELL := /bin/bash
export LC_ALL := C.UTF-8
export LANG := C.UTF-8
export MIX_HOME ?= $(CURDIR)/.mix
export ERL_AFLAGS ?= -kernel shell_history disabled

APT_PACKAGES := erlang-nox erlang-dev elixir erlang-proper
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps native dist test test-rust test-elixir test-ship lint soak bench bench-core bench-compare bench-beam demo demo-cluster clean

all: test

# Installs Erlang/OTP, Elixir and PropEr when `erl`, `mix` or PropEr is missing.
# Non-interactive and idempotent: a second run does nothing.
deps:
	@if command -v erl >/dev/null && command -v mix >/dev/null && \
	    erl -noshell -eval 'case code:which(proper) of non_existing -> halt(1); _ -> halt(0) end.' >/dev/null 2>&1; then \
	  echo "deps: erl, mix and proper present"; \
	else \
	  echo "deps: installing $(APT_PACKAGES)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); \
	fi

native:
	cargo build --release --locked -p breakwater_nif

# An OTP library tree (breakwater, elixir, logger: lib/<app>-<vsn>/{ebin,priv}) for
# Erlang builds without Mix: ERL_LIBS=$(DIST)/lib erl -config sys.config, or a relx
# release. See `mix help breakwater.dist`.
DIST ?= _build/dist
dist: deps
	MIX_ENV=prod mix breakwater.dist --out $(DIST)

test: deps lint test-rust test-elixir test-ship

lint: deps
	@if grep -rnE 'R-[A-Z][0-9]|SPEC' lib docs README.md native test benches; then \
	  echo "lint: the lines above cite requirement ids of a document that is not in the repository"; \
	  exit 1; \
	fi
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --release --locked -- -D warnings
	mix format --check-formatted
	MIX_ENV=test mix compile --warnings-as-errors --force

test-rust:
	cargo test --workspace --release --locked
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p breakwater_core --release \
	  --test loom_state_word --test loom_table --test loom_spool_cut --test loom_signals

test-elixir: deps
	MIX_ENV=test mix test

# Breakwater built and run the ways users build and run it (test/ship): host Mix
# projects depending on it by path and by git, prod releases of them, and `make dist`
# on a plain erl node running the README's examples.
test-ship: deps
	MIX_ENV=test mix test --only ship

# The spool's fault tests at length: the SIGKILL fault matrix with SOAK_KILLS kill points
# per scenario (make test runs 7), the damage tests, and the Rust stress tests repeated.
SOAK_KILLS ?= 40
soak: deps
	for i in 1 2 3 4 5; do cargo test -p breakwater_core --release --test stress || exit 1; done
	BW_FAULT_KILLS=$(SOAK_KILLS) MIX_ENV=test mix test \
	  test/breakwater/fault_matrix_test.exs test/breakwater/spool_damage_test.exs

# Criterion benches of the Rust core, the before/after comparison of the hot paths, then
# the BEAM bench, which writes docs/benchmarks.md from all three (one after the other,
# even under make -j).
bench: deps
	$(MAKE) --no-print-directory bench-core
	$(MAKE) --no-print-directory bench-compare
	$(MAKE) --no-print-directory bench-beam

# Results in target/criterion; the console output (with the thread-scaling table the
# bench prints after the criterion groups) is kept in target/bench-core.log for
# docs/benchmarks.md. BENCH_CORE_FILTER (criterion's regex) runs a subset, e.g.
# `make bench-core BENCH_CORE_FILTER=^spool/`.
BENCH_CORE_FILTER ?=
bench-core:
	mkdir -p target
	set -o pipefail; cargo bench -p breakwater_core --bench core \
	  $(if $(BENCH_CORE_FILTER),-- '$(BENCH_CORE_FILTER)') 2>&1 | tee target/bench-core.log

# The hot paths (check, admit, record with and without a latency) on a scratch clone of
# BEFORE and on this tree, alternately, in one time window (benches/compare.sh). BEFORE
# defaults to the revision before the overload signals came in.
BEFORE ?= $(shell git log -1 --format=%H --grep='^Overload signals: depth' 2>/dev/null)
bench-compare: deps
	@if [ -z "$(BEFORE)" ]; then \
	  echo "bench-compare: no BEFORE revision (set BEFORE=<rev>); skipped"; \
	else \
	  benches/compare.sh "$(BEFORE)^"; \
	fi

bench-beam: deps
	MIX_ENV=bench mix run benches/beam_bench.exs

demo: deps
	MIX_ENV=dev mix run -e 'Breakwater.Demo.main()'

# The demo on three local nodes (this one and two peers started with OTP's peer module;
# epmd is started if it does not run): one node's ledger outage opens every node's
# breaker, and each node closes on its own.
demo-cluster: deps
	MIX_ENV=dev mix run -e 'Breakwater.Demo.Cluster.main()'

clean:
	cargo clean
	rm -rf _build priv/native .mix
