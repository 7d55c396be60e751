# Makefile: the front door. `make run` and `make test` are the README's two commands.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
CONFIG     ?= conf/sluice.yaml

.PHONY: all deps test-deps build run test lint unit integration fuzz asan bench clean format

all: build

deps:
	@scripts/deps.sh run

test-deps:
	@scripts/deps.sh test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/sluice start -c $(CONFIG)

test: test-deps
	@scripts/test.sh

lint:
	@scripts/test.sh lint

format:
	@clang-format -i core/*.c core/*.h spec/core/*.c spec/core/*.h fuzz/*.c

bench: build test-deps
	@bench/run.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
