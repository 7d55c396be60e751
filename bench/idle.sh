#!/bin/bash
# idle.sh: memory (RSS) per idle keep-alive connection, sluice and nginx as proxies.
#
# Usage: bench/idle.sh
# Environment (all optional):
#   N=10000       idle connections to open
#   PARALLEL=16   requests in flight while the N connections make their one request
#   SETTLE=2      seconds to wait, all N idle, before reading the worker's RSS
#   SLUICE=build/sluice
#   KEEP=1        keep the temp dir (configs, logs) and print its path
#
# Method, per proxy (one worker each, the same upstream nginx behind both):
#   1. warm up: PARALLEL connections each make one request and close, so the
#      worker has grown whatever it keeps per *request in flight* (buffer free
#      lists, upstream pool) before the baseline is read;
#   2. before = VmRSS of the worker (the master's child, `pgrep -P MASTER`);
#   3. bench/idle_conns opens N connections, makes one keep-alive request on
#      each (PARALLEL at a time) and holds all N open, idle;
#   4. after = VmRSS of the worker; per connection = (after - before) / N.
# RSS is user-space memory only: kernel socket structures and buffers are not
# in it (they are the same for every proxy on the same kernel).
# Raising the file limit above the hard limit needs root; without it, N is
# lowered to what the limit allows and the script says so.
set -eu

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

N=${N:-10000}
PARALLEL=${PARALLEL:-16}
SETTLE=${SETTLE:-2}

require_sluice

# Every process started below inherits this limit: the proxy needs N client
# sockets (+ upstream ones), idle_conns needs N.
want=$((N + 1024))
[ "$want" -lt 65536 ] && want=65536
ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
limit=$(ulimit -n)
if [ "$limit" != unlimited ] && [ "$limit" -lt $((N + 512)) ]; then
    echo "idle.sh: ulimit -n is $limit (raising it needs root); measuring $((limit - 512)) connections" >&2
    N=$((limit - 512))
fi

# Anything still running 0.5 s after its stop signal at exit gets SIGKILL.
bench_tmp idle 500
# Every nginx may open 65536 files; every listener queues up to 4096
# connections: N of them arrive at once.
NGINX_NOFILE=65536
BACKLOG=4096

# rss_kib PID: VmRSS in KiB.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# worker_of MASTER: the single child process (the worker), waiting for it.
worker_of() {
    local w
    for _ in $(seq 100); do
        w=$(pgrep -P "$1" | head -n 1) || true
        if [ -n "$w" ]; then echo "$w"; return 0; fi
        sleep 0.1
    done
    return 1
}

gcc -O2 -Wall -Wextra -o "$TMP/idle_conns" bench/idle_conns.c

# --- the upstream ----------------------------------------------------------

upstream_conf 16384
start_upstream

# --- one measurement -------------------------------------------------------

# measure NAME PORT MASTER_PID: prints one result line, "NAME BEFORE AFTER".
measure() {
    local name=$1 port=$2 master=$3 worker before after out fds
    if ! wait_port "$port"; then
        echo "idle.sh: $name did not start; its logs:" >&2
        cat "$TMP/$name"/*.log >&2 || true
        return 1
    fi
    worker=$(worker_of "$master") || { echo "idle.sh: $name has no worker" >&2; return 1; }
    # Warm-up: PARALLEL simultaneous connections, one request each, then closed.
    if ! "$TMP/idle_conns" -p "$port" -n "$PARALLEL" -c "$PARALLEL" -t 0 >"$TMP/$name.warmup" 2>&1; then
        echo "idle.sh: warm-up through $name failed:" >&2
        cat "$TMP/$name.warmup" "$TMP/$name"/*.log >&2
        return 1
    fi
    sleep 1
    before=$(rss_kib "$worker")

    out="$TMP/$name.idle"
    "$TMP/idle_conns" -p "$port" -n "$N" -c "$PARALLEL" -t 3600 >"$out" 2>&1 &
    local ic=$!
    for _ in $(seq 1200); do
        grep -q '^READY' "$out" && break
        kill -0 "$ic" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^READY' "$out"; then
        echo "idle.sh: idle_conns did not get ready against $name:" >&2
        cat "$out" >&2
        kill "$ic" 2>/dev/null || true
        return 1
    fi
    sleep "$SETTLE"
    after=$(rss_kib "$worker")
    fds=$(find "/proc/$worker/fd" -mindepth 1 2>/dev/null | wc -l)
    kill -TERM "$ic" 2>/dev/null || true
    wait "$ic" 2>/dev/null || true
    echo "  $name: $(grep '^READY' "$out") $(grep '^DONE' "$out" || true)" >&2
    echo "  $name: worker pid $worker had $fds open files with all connections idle" >&2
    if ! grep -q "^READY idle=$N connect_failed=0 request_failed=0" "$out"; then
        echo "  !! $name: not every connection got a 2xx response and stayed open" >&2
    fi
    echo "$name $before $after"
}

RESULTS=""

# sluice: one worker, no access log, the same upstream.
start_sluice
echo "== sluice ($N idle connections, $PARALLEL requests in flight)" >&2
RESULTS="$RESULTS$(measure sluice "$SLUICE_PORT" "$SLUICE_PID")
"
kill -QUIT "$SLUICE_PID" 2>/dev/null || true

# nginx as the same proxy: one worker, upstream keepalive, enough connections.
nginx_proxy_conf $((2 * N + 1024))
start_nginx NGINX_PID nginx
echo "== nginx ($N idle connections, $PARALLEL requests in flight)" >&2
RESULTS="$RESULTS$(measure nginx "$NGINX_PORT" "$NGINX_PID")
"

echo
echo "| proxy | worker RSS before | with $N idle | per idle connection |"
echo "| --- | ---: | ---: | ---: |"
printf '%s' "$RESULTS" | while read -r name before after; do
    [ -n "$name" ] || continue
    awk -v n="$name" -v b="$before" -v a="$after" -v c="$N" 'BEGIN {
        printf "| %s | %d KiB | %d KiB | %.0f bytes |\n", n, b, a, (a - b) * 1024 / c }'
done
echo
echo "target: <= 1024 bytes per idle connection (sluice)"
