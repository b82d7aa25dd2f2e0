# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# What running needs (make run, make ext), then what testing adds (the test, tracing and fuzzing extras).
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# make run's addresses (HOST:PORT); CHAT_PAGE_ADDRESS=off serves no chat page. State: data/<component>-<host>-<port>/.
DEVNET_ADDRESS ?= 127.0.0.1:4943
GATEWAY_ADDRESS ?= 127.0.0.1:8080
METRICS_ADDRESS ?= 127.0.0.1:9000
CHAT_PAGE_ADDRESS ?= 127.0.0.1:8000
RUN_ADDRESSES = --devnet-address $(DEVNET_ADDRESS) --gateway-address $(GATEWAY_ADDRESS) \
	--metrics-address $(METRICS_ADDRESS) --chat-page-address $(CHAT_PAGE_ADDRESS)
# make fuzz: seconds per target, targets at once, which targets (empty: all; see fuzz/harness.py).
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 2
FUZZ_TARGETS ?=
# make soak: seconds of load (make test runs the same test for 10 s).
SOAK_SECONDS ?= 60
# Benchmark results (pytest-benchmark JSON and the ratio guard's inputs); CI keeps them (see .ci/run).
BENCH_DIR := artifacts/bench
# The ratio guard's run (make bench-guard, part of make test): every twin pair for ~0.3 s a side. The ratios
# hold at that length; absolute times gate nothing. make floors recalibrates from FLOORS_RUNS such runs.
GUARD_BENCH := ICWS_FAST_REQUIRE_EXT=1 nice -n 5 $(PY) -m pytest benchmarks -m twin --benchmark-only --benchmark-enable \
	-q -p no:cacheprovider --benchmark-max-time=0.3 --benchmark-min-rounds=5
FLOORS_RUNS ?= 8
# The gateway-bound quick run (benchmarks/e2e/bench_capacity.py --quick, ~15 s): the guard takes the median of the
# gateway/bare ratios of CAPACITY_RUNS such runs. $(call capacity_runs,PREFIX) writes PREFIX-1.json, PREFIX-2.json...
CAPACITY_RUNS ?= 3
CAPACITY_QUICK := ICWS_FAST_REQUIRE_EXT=1 nice -n 5 $(PY) -m benchmarks.e2e.bench_capacity --quick
GUARD_CHECK = $(PY) -m benchmarks.floors check --capacity $(BENCH_DIR)/guard-capacity-*.json
capacity_runs = rm -f $(1)-*.json; \
	for quick in $$(seq $(CAPACITY_RUNS)); do $(CAPACITY_QUICK) --json $(1)-$$quick.json || exit 1; done
# `make run WASM_CANISTERS="mo=path/to/canister.wasm" WASM_INIT_ARG="mo=(50 : nat64, 300_000 : nat64)"` also
# serves canister modules (space-separated NAME=PATH.wasm) next to the demo canisters; see docs/devnet.md.
WASM_CANISTERS ?=
WASM_INIT_ARG ?=
# make load: a Locust campaign (the weighted mix of loadtest/locustfile.py) against the `make run` stack;
# LOAD_ARGS adds Locust options (scenario class names, --tags, --max-p99 ...); reports go to build/load/.
LOAD_SECONDS ?= 30
LOAD_USERS ?= 20
LOAD_ARGS ?=

.PHONY: run run-clean dev test ext lint typecheck pytest pytest-pure bench bench-guard floors interop-deps fuzz soak load clean

$(RUN_STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77" wheel "Cython>=3.0"
	$(PY) -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet -e '.[test,otel,fuzz]'
	touch $(TEST_STAMP)

ext: $(RUN_STAMP)
	$(PY) setup.py --quiet build_ext --inplace -j 2

# Everything for working on the project: the extensions and the test extras (what `make test` installs).
dev: ext $(TEST_STAMP)

run: ext
	$(PY) -m icws_fast.devnet.run_all $(RUN_ADDRESSES) \
		$(foreach canister,$(WASM_CANISTERS),--canister $(canister)) $(if $(WASM_INIT_ARG),--init-arg '$(WASM_INIT_ARG)')

# Removes make run's state (devnet canisters, gateway key) for the addresses given, as for make run.
run-clean: $(RUN_STAMP)
	$(PY) -m icws_fast.devnet.run_all --clean $(RUN_ADDRESSES)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(TEST_STAMP)
	$(VENV)/bin/mypy

interop-deps:
	cd tests/interop && npm ci --no-audit --no-fund --loglevel=error
	cd examples/chat-web && npm ci --no-audit --no-fund --loglevel=error

# Compiled mode: the extensions must import (a broken build fails instead of falling back).
pytest: ext $(TEST_STAMP) interop-deps
	ICWS_FAST_REQUIRE_EXT=1 $(PY) -m pytest -q

# Pure mode: every test but the slow end-to-end ones, on the pure-Python twins.
pytest-pure: ext $(TEST_STAMP)
	ICWS_FAST_PURE=1 $(PY) -m pytest -q -m "not slow and not interop"

test: lint typecheck pytest pytest-pure bench-guard

# Coverage-guided fuzzing of every parser a peer can reach; crashing inputs land in fuzz/regressions/.
fuzz: ext $(TEST_STAMP)
	nice -n 10 $(PY) -m fuzz.run --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) $(FUZZ_TARGETS)

# The soak: >= 50 verifying clients plus firehose traffic through a gateway process; prints the messages
# delivered, msgs/s and the gateway's RSS, and fails on a lost, duplicated or reordered message.
soak: ext $(TEST_STAMP)
	SOAK_SECONDS=$(SOAK_SECONDS) ICWS_FAST_REQUIRE_EXT=1 $(PY) -m pytest -q -s tests/faults/test_load.py -k test_soak

# Needs `make run` in another terminal; prints Locust's tables and the campaign summary, fails (status 1) on
# a threshold missed, and says so when the stack is not running.
load: ext
	@$(PY) -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('locust') is None)" \
		|| $(PY) -m pip install --quiet -e '.[load]'
	@mkdir -p build/load
	ICWS_GATEWAY_URL=ws://$(GATEWAY_ADDRESS) ICWS_IC_URL=http://$(DEVNET_ADDRESS) $(VENV)/bin/locust \
		-f loadtest/locustfile.py --headless --only-summary -u $(LOAD_USERS) -r $(LOAD_USERS) -t $(LOAD_SECONDS)s \
		--csv build/load/campaign --html build/load/campaign.html $(LOAD_ARGS)

# Every benchmark (absolute times, for people) and the gateway-bound quick runs, then the ratio guard on them.
bench: ext $(TEST_STAMP)
	mkdir -p $(BENCH_DIR)
	ICWS_FAST_REQUIRE_EXT=1 $(PY) -m pytest benchmarks --benchmark-only --benchmark-enable -q \
		--benchmark-json=$(BENCH_DIR)/bench.json
	$(call capacity_runs,$(BENCH_DIR)/capacity)
	$(PY) -m benchmarks.floors check --results $(BENCH_DIR)/bench.json --capacity $(BENCH_DIR)/capacity-*.json

# The ratio guard: compiled/pure speed-ups and gateway/bare against benchmarks/floors.json. A speed-up below its floor
# is measured again (guard-2.json) and fails only if no run reaches it: another job can slow one run down.
bench-guard: ext $(TEST_STAMP)
	mkdir -p $(BENCH_DIR)
	rm -f $(BENCH_DIR)/guard-2.json
	$(GUARD_BENCH) --benchmark-json=$(BENCH_DIR)/guard.json
	$(call capacity_runs,$(BENCH_DIR)/guard-capacity)
	$(GUARD_CHECK) --results $(BENCH_DIR)/guard.json; status=$$?; if [ $$status -eq 1 ]; then \
		echo "ratio guard: measuring the twin pairs again to confirm"; \
		$(GUARD_BENCH) --benchmark-json=$(BENCH_DIR)/guard-2.json && \
		$(GUARD_CHECK) --results $(BENCH_DIR)/guard.json $(BENCH_DIR)/guard-2.json; \
	else exit $$status; fi

# New floors from FLOORS_RUNS guard runs: each floor at their median, its noise allowance from their spread.
floors: ext $(TEST_STAMP)
	rm -rf $(BENCH_DIR)/floors && mkdir -p $(BENCH_DIR)/floors
	for run in $$(seq $(FLOORS_RUNS)); do \
		$(GUARD_BENCH) --benchmark-json=$(BENCH_DIR)/floors/guard-$$run.json || exit 1; \
		$(call capacity_runs,$(BENCH_DIR)/floors/capacity-$$run); \
	done
	$(PY) -m benchmarks.floors calibrate $(BENCH_DIR)/floors/guard-*.json --write $$(for run in $$(seq $(FLOORS_RUNS)); \
		do ls $(BENCH_DIR)/floors/capacity-$$run-*.json >/dev/null 2>&1 && echo --capacity $(BENCH_DIR)/floors/capacity-$$run-*.json; done)

clean:
	rm -rf build $(VENV) icws_fast/_ext/*.c icws_fast/_ext/*.so .pytest_cache .mypy_cache .ruff_cache
