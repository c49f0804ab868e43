# Convenience targets over CMake: `make run` and `make test` are the README's two commands.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# Debian 12 packages for building, running and testing hookd.
DEPS = cmake gcc make pkg-config libuv1-dev node-llhttp libcjson-dev libssl-dev \
       libsqlite3-dev libcurl4-openssl-dev libcmocka-dev python3 python3-pytest \
       python3-aiosmtpd curl openssl wrk

.PHONY: all deps build run test clean

all: build

# Installs only what is missing (apt-get; sudo when not root).
deps:
	@missing=$$(for p in $(DEPS); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing:" $$missing; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# Starts hookd with the example config. The demo signing key is only for
# trying it out: set CIRRUS_SIGNING_KEY to yours.
run: build
	CIRRUS_SIGNING_KEY="$${CIRRUS_SIGNING_KEY:-demo-signing-key}" \
	  ./$(BUILD)/hookd run -c examples/hookd.jsonc

# Every test: C unit tests, the SDK install check and the integration suite.
test: build
	cd $(BUILD) && ctest --output-on-failure

clean:
	rm -rf $(BUILD)
