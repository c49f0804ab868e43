# Convenience targets over CMake: `make run` and `make test` are the README's two commands.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# Debian 12 packages: what building and running needs, and what the tests add.
DEPS = cmake gcc make pkg-config libuv1-dev node-llhttp libcjson-dev libssl-dev \
       libsqlite3-dev libcurl4-openssl-dev libsystemd-dev libical-dev curl openssl zlib1g-dev \
       libpq-dev
# python3-pytest/aiosmtpd: integration suite (Debian's /usr/bin/python3);
# prometheus: promtool checks /metrics; chromium + python3-websocket: the
# status page test (DevTools protocol); groff-base: man page check;
# systemd: systemd-analyze verify of the unit; wrk: benchmarks; nodejs: the
# senders' signing libraries (tests/node) and an undici client over TLS;
# python3-icalendar: reads email_notify's invitations back; g++: plugin.h as C++;
# postgresql-15: the shared spool's tests start throwaway clusters.
TEST_DEPS = libcmocka-dev python3 python3-pytest python3-aiosmtpd python3-icalendar g++ wrk \
       prometheus chromium python3-websocket groff-base systemd nodejs postgresql-15

.PHONY: all deps test-deps build run test fuzz memcheck bench soak clean

all: build

# Installs only what is missing (apt-get; sudo when not root).
define install_missing
	@missing=$$(for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing:" $$missing; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi
endef

deps:
	$(call install_missing,$(DEPS))

test-deps:
	$(call install_missing,$(DEPS) $(TEST_DEPS))

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# Starts hookd with the example config. The demo signing key is only for
# trying it out: set CIRRUS_SIGNING_KEY to yours.
run: build
	CIRRUS_SIGNING_KEY="$${CIRRUS_SIGNING_KEY:-demo-signing-key}" \
	  ./$(BUILD)/hookd run -c examples/hookd.jsonc

# Every test: C unit tests, the SDK install check and the integration suite.
# tests/node: the senders' own signing libraries (npm, pinned by package-lock.json).
test: test-deps build
	@command -v npm >/dev/null 2>&1 || { sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq npm; }
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	cd $(BUILD) && ctest --output-on-failure

# libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined), each run for
# FUZZ_SECONDS (default 60) from seeds made of examples/payloads: tests/fuzz/run.sh.
FUZZ_SECONDS ?= 60
fuzz:
	$(call install_missing,$(DEPS) clang llvm python3)
	FUZZ_BUILD=$(CURDIR)/build-fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

# A representative part of the integration suite with every daemon under
# valgrind memcheck: an error or a definite/indirect leak fails the test.
MEMCHECK_TESTS ?= test_http.py test_security.py test_delivery.py test_cli.py
memcheck: test-deps
	$(call install_missing,valgrind)
	cmake -S . -B build-memcheck -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)
	cmake --build build-memcheck -j$(JOBS)
	cd tests/integration && HOOKD_VALGRIND=1 HOOKD_BUILD_DIR=$(CURDIR)/build-memcheck \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider $(MEMCHECK_TESTS)

# Benchmark suite (Release build in build-bench, hookd -> noop plugin): prints
# the table of tests/bench/run.sh; BENCH="table compare callgrind profile" for all.
BENCH ?= table
bench: test-deps
	$(call install_missing,valgrind linux-perf webhook nodejs)
	tests/bench/run.sh $(BENCH)

# Soak (not part of `make test`): a Release build in build-soak, then
# SOAK_EVENTS events (1,000,000) with random retries, three crashing events
# and kill -9 every SOAK_KILL_EVERY seconds (120); checks that everything
# answered 200 is delivered in order and RSS/fds stay flat. SOAK_OUT: where.
soak: test-deps
	cmake -S . -B build-soak -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build build-soak -j$(JOBS)
	/usr/bin/python3 tests/soak/soak.py build-soak

clean:
	rm -rf $(BUILD)
