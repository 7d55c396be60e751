#!/bin/sh
# test.sh: every check `make test` runs, in order; prints one line per stage and a total.
# Usage: scripts/test.sh [lint|unit|integration|fuzz|asan]...   (default: all of them)
set -u
cd "$(dirname "$0")/.."

JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-15}
passed=0
failed=0
failures=""

stage() {
    stage_name=$1
    shift
    echo "==> $stage_name"
    if "$@"; then
        passed=$((passed + 1))
        echo "==> $stage_name: ok"
    else
        failed=$((failed + 1))
        failures="$failures $stage_name"
        echo "==> $stage_name: FAILED"
    fi
}

configure() { # dir, extra cmake args...
    dir=$1
    shift
    cmake -S . -B "$dir" "$@" >/dev/null && cmake --build "$dir" -j "$JOBS" >/dev/null
}

lint_c() {
    clang-format --dry-run --Werror core/*.c core/*.h spec/core/*.c spec/core/*.h fuzz/*.c
}

lint_lua() {
    dirs=""
    for d in lua plugins spec examples bench; do
        [ -d "$d" ] && dirs="$dirs $d"
    done
    # shellcheck disable=SC2086
    luacheck -q $dirs
}

build_release() { configure build -DCMAKE_BUILD_TYPE=Release; }
build_asan() { configure build-asan -DCMAKE_BUILD_TYPE=Debug -DSL_ASAN=ON -DSL_UBSAN=ON; }

unit() { # build dir
    (cd "$1" && ctest --output-on-failure)
}

integration() { # build dir
    SLUICE_BIN="$PWD/$1/sluice" "$1/sluice" test spec/ examples/
}

fuzz() {
    CC=clang configure build-fuzz -DCMAKE_BUILD_TYPE=Debug -DSL_FUZZ=ON || return 1
    mkdir -p fuzz/artifacts
    for f in build-fuzz/fuzz_*; do
        name=${f#build-fuzz/fuzz_}
        work=$(mktemp -d)
        cp -r "fuzz/corpus/$name/." "$work/" 2>/dev/null
        echo "fuzz: $name for ${FUZZ_SECONDS}s"
        "$f" -max_total_time="$FUZZ_SECONDS" -artifact_prefix=fuzz/artifacts/ \
            -print_final_stats=0 "$work" >"$work.log" 2>&1 ||
            { tail -40 "$work.log"; rm -rf "$work" "$work.log"; return 1; }
        rm -rf "$work" "$work.log"
    done
}

asan() {
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    # LuaJIT's allocator and the sanitizers disagree about who owns the heap; leaks
    # inside libluajit are suppressed, ours are not.
    export LSAN_OPTIONS=suppressions=$PWD/scripts/lsan.supp:print_suppressions=0
    build_asan && unit build-asan && integration build-asan
}

stages=${*:-lint unit integration fuzz asan}
for s in $stages; do
    case $s in
    lint)
        stage "clang-format" lint_c
        stage "luacheck" lint_lua
        ;;
    unit)
        stage "build (release)" build_release
        stage "unit tests (release)" unit build
        ;;
    integration)
        stage "integration specs (release)" integration build
        ;;
    fuzz)
        stage "fuzz (${FUZZ_SECONDS}s per parser)" fuzz
        ;;
    asan)
        stage "ASan+UBSan build and tests" asan
        ;;
    *)
        echo "unknown stage: $s" >&2
        exit 2
        ;;
    esac
done

[ -n "$failures" ] && echo "failed stages:$failures"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
