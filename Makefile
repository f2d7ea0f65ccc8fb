# AngelSlim C++ — set-up, build, demo and tests. `make demo` and `make test` install what is missing.
SHELL := /bin/bash
BUILD ?= build
SAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 25
JOBS ?= $(shell nproc)
DEB_PKGS := cmake ninja-build g++ pkg-config xz-utils libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev \
            libfmt-dev libeigen3-dev libopenblas-dev libpcre2-dev libutf8proc-dev libstb-dev libgtest-dev \
            libbenchmark-dev clang-14 libclang-rt-14-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_CONFIG ?= configs/examples/hy_dense_tiny_fp8_static.yaml
DEMO_MODEL ?= tests/data/fixtures/hy-dense-tiny
EVAL_IDS ?= tests/data/eval/heldout.hy-tiny.ids.bin

.PHONY: all deps build build-asan demo test test-fast test-asan bench clean fuzz-build fuzz-smoke

all: build

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

$(SAN_BUILD)/build.ninja:
	cmake -S . -B $(SAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DANGELSLIM_SANITIZE=ON -DANGELSLIM_BENCH=OFF $(CMAKE_ARGS)

build-asan: deps $(SAN_BUILD)/build.ninja
	cmake --build $(SAN_BUILD) -j $(JOBS) --target angelslim angelslim_tests

# Quantize the bundled tiny model with FP8 static and compare perplexity before and after.
demo: build
	./$(BUILD)/bin/angelslim -c $(DEMO_CONFIG) --save-path output --overwrite
	@out=output/$$(basename $(DEMO_CONFIG) .yaml); \
	echo "== perplexity on held-out text (8 windows of 512 tokens, fp32 reference forward)"; \
	./$(BUILD)/bin/angelslim eval --model $$out --baseline $(DEMO_MODEL) --ids $(EVAL_IDS) --windows 8; \
	./$(BUILD)/bin/angelslim inspect $$out; \
	./$(BUILD)/bin/angelslim generate --model $$out --prompt "The whale" --max-new-tokens 24

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: build-asan
	cd $(SAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:protect_shadow_gap=0 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

# The whole suite on the release build, then again under ASan+UBSan.
test: test-fast test-asan fuzz-smoke

# libFuzzer targets (fuzz/README.md): clang build with ASan+UBSan; the smoke run replays the seed corpora and
# regression inputs and fuzzes each target for FUZZ_SECONDS.
$(FUZZ_BUILD)/build.ninja:
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DANGELSLIM_FUZZ=ON \
	  -DANGELSLIM_TESTS=OFF -DANGELSLIM_BENCH=OFF -DANGELSLIM_CUDA=OFF $(CMAKE_ARGS)

fuzz-build: deps $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz

fuzz-smoke: fuzz-build
	bash fuzz/smoke.sh $(FUZZ_BUILD)/bin $(FUZZ_SECONDS)

bench: build
	bash bench/e2e/cpu_bench.sh

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FUZZ_BUILD) output
