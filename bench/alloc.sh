#!/bin/bash
# alloc.sh: heap allocations per proxied request in steady state (expected: 0).
#
# Usage: bench/alloc.sh
# Environment (all optional):
#   N1=10000      warm-up requests (keep-alive), not counted
#   N2=100000     counted requests (keep-alive)
#   CLIENTS=4     curl processes sharing N1 and N2: one connection each
#   N3=1000       counted requests on a new connection each (Connection: close)
#   WRK_TIME=5s   counted wrk run, 64 connections (0 skips it)
#   SLUICE=build/sluice
#   KEEP=1        keep the temp dir and print its path
#
# Method: bench/malloc_count.c, built here into an LD_PRELOAD library, wraps
# malloc, calloc, realloc, the memalign family and free. Each process that
# loads it (sluice's master and, through fork, its worker) counts into its own
# shared-memory file MALLOC_COUNT_DIR/malloc_count.PID, which this script reads
# while the worker runs. No signal, no stop: the counts are live.
#   phase A: N1 warm-up requests; read the worker's counters (c1);
#            N2 requests on CLIENTS keep-alive connections; read again (c2);
#            allocations per request = (c2 - c1) / N2. curl's URL globbing
#            sends exactly N2/CLIENTS requests over one connection per process.
#   phase B: N3 requests each on a new connection: the cost of a connection
#            (accept, close) rather than of a request.
#   phase C: wrk with 64 connections for WRK_TIME after a warm-up with the same
#            connections: the same steady state with 64 requests in flight.
# Client keep-alive and upstream keep-alive limits are lifted in the config
# (keepalive_requests, upstream_keepalive_max_requests), so phase A sees only
# requests; with the defaults, a reconnect every 1,000 client requests would
# add phase B's per-connection cost once per 1,000 requests.
set -eu

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

N1=${N1:-10000}
N2=${N2:-100000}
N3=${N3:-1000}
CLIENTS=${CLIENTS:-4}
WRK_TIME=${WRK_TIME:-5s}

require_sluice

# Anything still running 0.5 s after its stop signal at exit gets SIGKILL.
bench_tmp alloc 500
# sluice's client and upstream connections are never closed after some
# number of requests: phase A counts requests only.
LIFT_KEEPALIVE=1

gcc -O2 -Wall -Wextra -shared -fPIC -o "$TMP/malloc_count.so" bench/malloc_count.c
mkdir -p "$TMP/counts"

# counters PID: "malloc calloc realloc memalign free bytes" of that process.
counters() { od -An -v -t u8 "$TMP/counts/malloc_count.$1" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//'; }
# allocs "COUNTERS": malloc + calloc + realloc + memalign
allocs() { echo "$1" | awk '{ print $1 + $2 + $3 + $4 }'; }

# --- upstream and sluice ---------------------------------------------------

upstream_conf 4096
start_upstream

# Only sluice gets the preload: curl, wrk and nginx are not counted.
start_sluice env LD_PRELOAD="$TMP/malloc_count.so" MALLOC_COUNT_DIR="$TMP/counts"
wait_port "$SLUICE_PORT" || { cat "$TMP/sluice"/*.log >&2; exit 1; }

WORKER=""
for _ in $(seq 100); do
    WORKER=$(pgrep -P "$SLUICE_PID" | head -n 1) || true
    [ -n "$WORKER" ] && [ -s "$TMP/counts/malloc_count.$WORKER" ] && break
    sleep 0.1
done
if [ -z "$WORKER" ] || [ ! -s "$TMP/counts/malloc_count.$WORKER" ]; then
    echo "alloc.sh: no counter file for sluice's worker (is LD_PRELOAD honoured?)" >&2
    ls -l "$TMP/counts" >&2
    exit 1
fi

# --- clients ---------------------------------------------------------------

# requests TOTAL [curl args...]: TOTAL requests from CLIENTS curl processes,
# each over one connection (URL globbing reuses it); fails unless every
# answer was a 200. Prints how many connections curl opened in all.
requests() {
    local total=$1 per i pids="" bad
    shift
    per=$((total / CLIENTS))
    for i in $(seq "$CLIENTS"); do
        # the body has no newline: the -w line stands on its own after "\n"
        curl -s "$@" -w '\n%{http_code} %{num_connects}\n' \
            "http://127.0.0.1:$SLUICE_PORT/bench/$i/[1-$per]" >"$TMP/curl.$i" 2>&1 &
        pids="$pids $!"
    done
    # shellcheck disable=SC2086 # a list of pids
    wait $pids || true
    bad=$(cat "$TMP"/curl.* | awk '/^[0-9][0-9][0-9] [0-9]+$/ { n++; if ($1 != 200) b++; c += $2 }
        END { if (n != t) b += t - n; print b + 0, c + 0 }' t=$((per * CLIENTS)))
    if [ "${bad% *}" != 0 ]; then
        echo "alloc.sh: ${bad% *} of $((per * CLIENTS)) requests did not get a 200:" >&2
        grep -hv '^200 ' "$TMP"/curl.* | sort | uniq -c | sort -rn | head -n 5 >&2
        exit 1
    fi
    echo "${bad#* }"
}

echo "sluice worker pid $WORKER; counters: malloc calloc realloc memalign free bytes"
c0=$(counters "$WORKER")
echo "  after start:                    $c0"

conns=$(requests "$N1")
c1=$(counters "$WORKER")
echo "  after $N1 warm-up requests:   $c1   ($conns connections)"

conns=$(requests "$N2")
conns2=$conns
c2=$(counters "$WORKER")
echo "  after $N2 more requests:     $c2   ($conns connections)"

conns=$(requests "$N3" -H "Connection: close")
c3=$(counters "$WORKER")
echo "  after $N3 new-connection ones: $c3   ($conns connections)"

if [ "$WRK_TIME" != 0 ]; then
    wrk -t1 -c64 -d2s "http://127.0.0.1:$SLUICE_PORT/" >"$TMP/wrk.warmup" 2>&1
    # wrk's connections were closed; open 64 new ones, then count from here on
    wrk -t1 -c64 -d"$WRK_TIME" "http://127.0.0.1:$SLUICE_PORT/" >"$TMP/wrk.count" 2>&1 &
    WRK=$!
    sleep 1
    c4=$(counters "$WORKER")
    n4a=$(date +%s.%N)
    wait "$WRK" || true
    n4b=$(date +%s.%N)
    c5=$(counters "$WORKER")
    # requests counted: wrk's rate times the counted window (wrk ran 1 s before c4)
    rate=$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/wrk.count")
    n5=$(awk -v r="${rate:-0}" -v a="$n4a" -v b="$n4b" 'BEGIN { printf "%d", r * (b - a) }')
    errors=$(grep -E 'Socket errors|Non-2xx' "$TMP/wrk.count" || true)
    echo "  wrk -c64: ~$n5 requests counted: $c4 -> $c5 ${errors:+($errors)}"
fi

if ! kill -0 "$WORKER" 2>/dev/null; then
    echo "alloc.sh: the worker (pid $WORKER) died; error log:" >&2
    cat "$TMP/sluice/error.log" >&2
    exit 1
fi

per() { awk -v a="$(allocs "$1")" -v b="$(allocs "$2")" -v n="$3" 'BEGIN { printf "%.4f (%d in %d)", (b - a) / n, b - a, n }'; }
echo
echo "allocations per request in steady state (keep-alive): $(per "$c1" "$c2" "$N2")"
echo "  (that count includes opening the $conns2 connections the $N2 requests used)"
echo "allocations per request on a new connection each:    $(per "$c2" "$c3" "$N3")"
if [ "$WRK_TIME" != 0 ]; then
    echo "allocations per request, wrk 64 connections:          $(per "$c4" "$c5" "${n5:-1}")"
fi
