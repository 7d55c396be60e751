#!/bin/bash
# balancers.sh: what balancing over 4 targets costs, per algorithm, against a single target.
#
# Usage: bench/balancers.sh           the cost of one pick per algorithm, then wrk
#        bench/balancers.sh --micro   the cost of one pick only (a second, no wrk)
# Environment (all optional):
#   DURATION=5s      wrk duration of each measured run
#   CONNECTIONS=64   wrk connections (the same for every target)
#   THREADS=1        wrk threads
#   ROUNDS=5         measured runs per target, interleaved: all five, then again
#                    in the opposite order, ...
#   WARMUP=2s        wrk run before every measured run, not counted ("0" skips it)
#   PROXY_CPU=1      CPU the sluice under test is pinned to
#   LOAD_CPU=0       CPU wrk and the upstream nginx are pinned to
#   SLUICE=build/sluice   the binary to measure
#   SKIP_DEPS=1      do not run scripts/deps.sh (e.g. offline)
#   KEEP=1           keep the temp dir (configs, logs, raw wrk output)
#
# The upstream is run.sh's (nginx, return 200 with a 47-byte JSON body, on
# LOAD_CPU), listening on four ports: four targets that cost the same, so
# that what differs between the runs is sluice's balancing alone. Targets,
# each one sluice with one worker pinned to PROXY_CPU, run one at a time:
#   single        the service's url names one of the ports (round-robin over 1)
#   round-robin   an upstream of the four ports, algorithm: round-robin
#   least-conn    the same, algorithm: least-connections
#   hash          the same, algorithm: consistent-hashing, hash_on: path
#                 (wrk varies nothing, so every request computes the key of /)
#   latency       the same, algorithm: latency
# Before that, bench/balancer_bench.c (built here against core/balancer*.c)
# prints the nanoseconds of one select + release per algorithm, which the
# machine's noise cannot hide the way it hides a 1% change in req/s.
set -eu

MICRO=0
case "${1:-}" in
    "") ;;
    --micro) MICRO=1 ;;
    *)
        echo "usage: bench/balancers.sh [--micro]" >&2
        exit 2
        ;;
esac

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

# micro: one pick (select + release) per algorithm, in a loop.
micro() {
    local out cc=${CC:-gcc} cflags=${CFLAGS:--O2 -g -std=gnu11 -Wall -Wextra}
    out=$(mktemp -d)
    # shellcheck disable=SC2086 # cflags is a word list
    $cc $cflags -Icore bench/balancer_bench.c \
        core/balancer.c core/balancer_rr.c core/balancer_lc.c core/balancer_hash.c \
        core/balancer_ewma.c -lm -o "$out/balancer_bench"
    echo "== one pick over 4 targets (bench/balancer_bench.c)"
    "$out/balancer_bench"
    rm -rf "$out"
}
if [ "$MICRO" = 1 ]; then
    micro
    exit 0
fi

DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2s}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
NAME_WIDTH=12

[ "${SKIP_DEPS:-0}" = 1 ] || scripts/deps.sh test

require_sluice
bench_tmp balancers 2000
NGINX_NOFILE=8192
LIFT_KEEPALIVE=1

if [ "$(nproc)" -lt 2 ]; then
    echo "balancers.sh: needs 2 CPUs to pin sluice apart from the load; found $(nproc)" >&2
    exit 1
fi

print_machine
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, warm-up $WARMUP, $ROUNDS rounds;" \
    "sluice on CPU $PROXY_CPU, wrk + upstream on CPU $LOAD_CPU"
machine_busy_check
micro

# --- the upstream: one nginx, four ports ------------------------------------

free_port UP_PORT2
free_port UP_PORT3
free_port UP_PORT4
UPSTREAM_SERVER="listen 127.0.0.1:$UP_PORT2; listen 127.0.0.1:$UP_PORT3; listen 127.0.0.1:$UP_PORT4;"
upstream_conf 4096 "keepalive_timeout 75s;"
start_upstream taskset -c "$LOAD_CPU"

# --- the sluices ------------------------------------------------------------

# balancer_conf NAME ALGORITHM [FIELD...]: like sluice_conf, but the service
# goes to an upstream of the four ports with ALGORITHM and the extra upstream
# FIELDs ("hash_on: path"); ALGORITHM "single" writes sluice_conf's config.
balancer_conf() {
    local name=$1 algorithm=$2 port f
    shift 2
    sluice_conf "$name" PORT
    [ "$algorithm" = single ] && return
    # Point the service at the upstream instead of the one port.
    sed -i "s|url: http://127.0.0.1:$UP_PORT|url: http://four|" "$TMP/$name/sluice.yaml"
    {
        echo "upstreams:"
        echo "  - name: four"
        echo "    algorithm: $algorithm"
        for f in "$@"; do echo "    $f"; done
        echo "    targets:"
        for port in "$UP_PORT" "$UP_PORT2" "$UP_PORT3" "$UP_PORT4"; do
            echo "      - target: 127.0.0.1:$port"
        done
    } >>"$TMP/$name/sluice.yaml"
}

NAMES="single round-robin least-conn hash latency"
declare -A PORT_OF PID_OF
for name in $NAMES; do
    case $name in
        single) balancer_conf "$name" single ;;
        round-robin) balancer_conf "$name" round-robin ;;
        least-conn) balancer_conf "$name" least-connections ;;
        hash) balancer_conf "$name" consistent-hashing "hash_on: path" ;;
        latency) balancer_conf "$name" latency ;;
    esac
    PORT_OF[$name]=$PORT # set by sluice_conf
done

# start NAME / stop NAME: one sluice at a time on PROXY_CPU.
start() {
    local name=$1 code
    start_sluice_as "PID_${name//-/_}" "$name" taskset -c "$PROXY_CPU"
    local var="PID_${name//-/_}"
    PID_OF[$name]=${!var}
    if ! wait_port "${PORT_OF[$name]}"; then
        echo "balancers.sh: sluice ($name) did not start:" >&2
        cat "$TMP/$name"/*.log >&2 || true
        exit 1
    fi
    code=$(curl -s -o "$TMP/check.$name" -w '%{http_code}' --max-time 5 \
        "http://127.0.0.1:${PORT_OF[$name]}/") || true
    if [ "$code" != 200 ] || [ "$(cat "$TMP/check.$name")" != "$UPSTREAM_BODY" ]; then
        echo "balancers.sh: $name answered HTTP ${code:-nothing}" >&2
        cat "$TMP/$name"/*.log >&2 || true
        exit 1
    fi
}
stop() {
    local pid=${PID_OF[$1]}
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

# --- measuring -------------------------------------------------------------

WRK=(wrk "-t$THREADS" "-c$CONNECTIONS" --latency)
: >"$TMP/results"
echo "== runs"
order=$NAMES
for round in $(seq "$ROUNDS"); do
    for name in $order; do
        start "$name"
        wrk_measure "$name" "${PORT_OF[$name]}" "${PID_OF[$name]}" "$round"
        stop "$name"
    done
    # Alternate the order so drift on the machine hits every target alike.
    order=$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')
done

for name in $NAMES; do
    if grep -qE '\[(warn|error|crit|alert|emerg)\]' "$TMP/$name/error.log" 2>/dev/null; then
        echo "== sluice ($name) error log: warnings and errors (last 10)"
        grep -E '\[(warn|error|crit|alert|emerg)\]' "$TMP/$name/error.log" | tail -n 10
    fi
done

# --- the table -------------------------------------------------------------

echo
echo "== results (median of $ROUNDS runs; latency in ms)"
echo
# shellcheck disable=SC2086 # NAMES is a list
results_table $NAMES
echo
SINGLE=$(col_median single 11)
for name in round-robin least-conn hash latency; do
    # Cost: how much less work per CPU-second than the single target, from
    # the medians; and the median of each round's own pair, which is less
    # sensitive to the machine changing speed between rounds.
    pairs=$(awk -v n="$name" '$1 == "single" { s[$2] = $11 } $1 == n { o[$2] = $11 }
        END { for (r in o) if (s[r] > 0 && o[r] > 0) print (1 - o[r] / s[r]) * 100 }' \
        "$TMP/results" | median)
    awk -v n="$name" -v a="$(col_median "$name" 11)" -v s="$SINGLE" -v p="$pairs" 'BEGIN {
        printf "%-12s cost per CPU-second vs single: %5.1f%% (medians), %5.1f%% (median of pairs)\n",
            n, (1 - a / s) * 100, p }'
done
echo "(target: <= 3%; negative = cheaper than the single target, i.e. noise)"
# shellcheck disable=SC2086
load_notes $NAMES
