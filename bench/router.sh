#!/bin/sh
# router.sh: builds bench/router_bench.c against core/router.c and prints ns/match per table size.
# Usage: bench/router.sh   (CC and CFLAGS may be overridden; needs pkg-config's libpcre2-8)
set -eu
cd "$(dirname "$0")/.."

CC=${CC:-gcc}
CFLAGS=${CFLAGS:-"-O2 -g -std=gnu11 -Wall -Wextra"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# shellcheck disable=SC2086,SC2046 # CFLAGS and pkg-config output are word lists
$CC $CFLAGS -Icore bench/router_bench.c core/router.c \
    $(pkg-config --cflags --libs libpcre2-8) -o "$out/router_bench"
"$out/router_bench"
