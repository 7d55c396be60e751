#!/bin/bash
# run.sh: wrk against one fixed upstream, directly and through nginx, haproxy and sluice.
#
# Usage: bench/run.sh            (from anywhere; `make bench` builds first and calls it)
# Environment (all optional):
#   DURATION=10s     wrk duration of each measured run
#   CONNECTIONS=64   wrk connections (the same for every target)
#   THREADS=1        wrk threads
#   ROUNDS=3         measured runs per target, interleaved: nginx, haproxy, sluice, nginx, ...
#   WARMUP=2s        wrk run before every measured run, not counted ("0" skips it)
#   PROXY_CPU=1      CPU the proxy under test is pinned to
#   LOAD_CPU=0       CPU wrk and the upstream nginx are pinned to
#   SLUICE=build/sluice   the binary to measure
#   SKIP_DEPS=1      do not run scripts/deps.sh (e.g. offline)
#   KEEP=1           keep the temp dir (configs, logs, raw wrk output) and print its path
#
# Every proxy runs ONE worker (nginx worker_processes 1, haproxy nbthread 1,
# sluice workers: 1) pinned to PROXY_CPU with taskset; the upstream nginx and
# wrk share LOAD_CPU. All of them get identical treatment, so the ratios
# compare the proxies and not the scheduler. Needs no root (deps.sh aside).
set -eu

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}

# wrk, nginx, haproxy and curl come from the test dependency set.
[ "${SKIP_DEPS:-0}" = 1 ] || scripts/deps.sh test

require_sluice
# Anything still running 2 s after its stop signal at exit gets SIGKILL.
bench_tmp bench 2000
# Every nginx may open 8192 files; no proxy closes a keep-alive connection
# after some number of requests (nginx, sluice; haproxy has no such limit).
NGINX_NOFILE=8192
LIFT_KEEPALIVE=1

# --- machine and versions --------------------------------------------------

print_machine "nginx: $(nginx -v 2>&1)" \
    "haproxy: $(haproxy -v 2>&1 | head -n 1)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, warm-up $WARMUP, $ROUNDS rounds;" \
    "proxies on CPU $PROXY_CPU, wrk + upstream on CPU $LOAD_CPU"

# A benchmark on a busy machine measures the other load. Say so up front.
machine_busy_check

if [ "$(nproc)" -lt 2 ]; then
    echo "run.sh: needs 2 CPUs to pin the proxy apart from the load; found $(nproc)" >&2
    exit 1
fi

# --- the upstream: nginx returning a fixed JSON body -----------------------

# keepalive_timeout 75s (nginx's default) like haproxy's http-keep-alive below.
upstream_conf 4096 "keepalive_timeout 75s;"
start_upstream taskset -c "$LOAD_CPU"

# --- the proxies -----------------------------------------------------------

nginx_proxy_conf 4096 "keepalive_timeout 75s;"
start_nginx NGINX_PID nginx taskset -c "$PROXY_CPU"

free_port HAPROXY_PORT
mkdir -p "$TMP/haproxy"
# One thread, HTTP mode, server connections shared between clients
# (http-reuse always), no log lines (no "log" directive anywhere).
cat >"$TMP/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 75s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    server up 127.0.0.1:$UP_PORT
EOF
spawn HAPROXY_PID haproxy TERM taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy/haproxy.cfg"

start_sluice taskset -c "$PROXY_CPU"

for t in nginx:$NGINX_PORT haproxy:$HAPROXY_PORT sluice:$SLUICE_PORT; do
    if ! wait_port "${t#*:}"; then
        echo "run.sh: ${t%%:*} did not start; its logs:" >&2
        cat "$TMP/${t%%:*}"/*.log >&2 || true
        exit 1
    fi
done

# Show that the pinning holds for the processes doing the work (a worker
# inherits its master's CPU mask across fork).
pinning=""
for t in upstream:$(pgrep -P "$UP_PID" | head -n 1) nginx:$(pgrep -P "$NGINX_PID" | head -n 1) \
    haproxy:$HAPROXY_PID sluice:$(pgrep -P "$SLUICE_PID" | head -n 1); do
    pid=${t#*:}
    [ -n "$pid" ] && pinning="$pinning ${t%%:*}=CPU$(taskset -pc "$pid" | awk '{ print $NF }')"
done
echo "pinning (worker processes):$pinning wrk=CPU$LOAD_CPU"

# Each target must answer 200 with the upstream's body before it is measured:
# a proxy that answers 502 fast would otherwise look very good.
for t in direct:$UP_PORT nginx:$NGINX_PORT haproxy:$HAPROXY_PORT sluice:$SLUICE_PORT; do
    name=${t%%:*} port=${t#*:}
    code=$(curl -s -o "$TMP/check.$name" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/") || true
    if [ "$code" != 200 ] || [ "$(cat "$TMP/check.$name")" != "$UPSTREAM_BODY" ]; then
        echo "run.sh: $name answered HTTP ${code:-nothing} with: $(head -c 300 "$TMP/check.$name")" >&2
        [ -d "$TMP/$name" ] && cat "$TMP/$name"/*.log >&2
        exit 1
    fi
done

# --- measuring -------------------------------------------------------------

WRK=(wrk "-t$THREADS" "-c$CONNECTIONS" --latency)

: >"$TMP/results"
echo "== runs"
# The direct run has no proxy; wrk and the upstream share LOAD_CPU.
wrk_measure direct "$UP_PORT" "" 1
for round in $(seq "$ROUNDS"); do
    wrk_measure nginx "$NGINX_PORT" "$NGINX_PID" "$round"
    wrk_measure haproxy "$HAPROXY_PORT" "$HAPROXY_PID" "$round"
    wrk_measure sluice "$SLUICE_PORT" "$SLUICE_PID" "$round"
done

# A proxy that died under load would leave a stale result behind; say so.
for t in nginx:$NGINX_PID haproxy:$HAPROXY_PID sluice:$SLUICE_PID; do
    kill -0 "${t#*:}" 2>/dev/null || echo "!! ${t%%:*} (pid ${t#*:}) is no longer running" >&2
done
# Anything sluice logged above notice level while under load is worth seeing.
if grep -qE '\[(warn|error|crit|alert|emerg)\]' "$TMP/sluice/error.log" 2>/dev/null; then
    echo "== sluice error log: warnings and errors (last 20)"
    grep -E '\[(warn|error|crit|alert|emerg)\]' "$TMP/sluice/error.log" | tail -n 20
fi

# --- the table -------------------------------------------------------------

echo
echo "== results (median of $ROUNDS runs; best req/s alongside; latency in ms)"
echo
results_table direct nginx haproxy sluice
echo
S_RPS=$(col_median sluice 3) N_RPS=$(col_median nginx 3) H_RPS=$(col_median haproxy 3)
S_P99=$(col_median sluice 5) N_P99=$(col_median nginx 5) H_P99=$(col_median haproxy 5)
S_EFF=$(col_median sluice 11) N_EFF=$(col_median nginx 11) H_EFF=$(col_median haproxy 11)
echo "sluice/nginx   req/s: $(ratio "$S_RPS" "$N_RPS")   p99: $(ratio "$S_P99" "$N_P99")" \
    "  req per proxy CPU-s: $(ratio "$S_EFF" "$N_EFF")"
echo "sluice/haproxy req/s: $(ratio "$S_RPS" "$H_RPS")   p99: $(ratio "$S_P99" "$H_P99")" \
    "  req per proxy CPU-s: $(ratio "$S_EFF" "$H_EFF")"
echo "(req/s and req per CPU-s: above 1 = sluice does more; p99: below 1 = sluice's tail is shorter)"

# Whether the load side or the proxy was the limit, and whether something
# else ran on the proxies' CPU.
load_notes nginx haproxy sluice
# Nothing of ours runs on PROXY_CPU during the direct run.
awk -v p="$(col_median direct 10)" -v pc="$PROXY_CPU" 'BEGIN { if (p > 10)
    printf "noise: CPU %s was %.0f%% busy during the direct run, which uses no proxy: " \
        "other processes competed; rerun on a quiet machine\n", pc, p }'
