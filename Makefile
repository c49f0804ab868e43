# Convenience targets over CMake: `make run` and `make test` are the README's two commands.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# Debian 12 packages: what building and running needs, and what the tests add.
DEPS = cmake gcc make pkg-config libuv1-dev node-llhttp libcjson-dev libssl-dev \
       libsqlite3-dev libcurl4-openssl-dev curl openssl
# python3-pytest/aiosmtpd: integration suite (Debian's /usr/bin/python3);
# prometheus: promtool checks /metrics; chromium + python3-websocket: the
# status page test (DevTools protocol); groff-base: man page check;
# systemd: systemd-analyze verify of the unit; wrk: benchmarks.
TEST_DEPS = libcmocka-dev python3 python3-pytest python3-aiosmtpd wrk \
       prometheus chromium python3-websocket groff-base systemd

.PHONY: all deps test-deps build run test clean

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
test: test-deps build
	cd $(BUILD) && ctest --output-on-failure

clean:
	rm -rf $(BUILD)
