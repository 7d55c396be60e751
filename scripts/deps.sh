#!/bin/sh
# deps.sh: installs the Debian packages sluice needs that are missing. Safe to run again.
# Usage: scripts/deps.sh [run|test]   (test adds what the test suite and benchmarks use)
set -eu

RUN_PKGS="build-essential cmake pkg-config libluajit2-5.1-dev libev-dev libssl-dev lua-cjson
libhiredis-dev libyaml-dev libpcre2-dev libc-ares-dev lua-busted"
TEST_PKGS="lua-check lua-socket lua5.1 linux-perf clang clang-format libclang-rt-14-dev redis-server wrk
nginx-light libnginx-mod-http-lua haproxy curl chromium"

pkgs=$RUN_PKGS
[ "${1:-run}" = test ] && pkgs="$RUN_PKGS $TEST_PKGS"

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
