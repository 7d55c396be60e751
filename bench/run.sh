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

# --- helpers ---------------------------------------------------------------

# cpu_ticks PID: utime+stime of PID and its children (a master and its worker).
cpu_ticks() {
    local total=0 p t
    for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
        # the fields after "PID (comm) ": $12 = utime, $13 = stime
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# parse_wrk FILE: "req/s p50_us p99_us errors requests" from wrk --latency output.
# Errors are socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
parse_wrk() {
    awk '
    function us(v) {
        if (v ~ /us$/) return v + 0
        if (v ~ /ms$/) return v * 1000
        if (v ~ /m$/)  return v * 60000000
        if (v ~ /s$/)  return v * 1000000
        return v + 0
    }
    /^ +50%/ { p50 = us($2) }
    /^ +99%/ { p99 = us($2) }
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { n = $1 }
    /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { e += $5 }
    END { printf "%s %s %s %d %s\n", rps + 0, p50 + 0, p99 + 0, e, n + 0 }' "$1"
}

# median: of the numbers on stdin.
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print 0; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

CLK_TCK=$(getconf CLK_TCK)

# --- machine and versions --------------------------------------------------

echo "== machine"
echo "nproc: $(nproc)"
echo "cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "kernel: $(uname -sr)"
echo "nginx: $(nginx -v 2>&1)"
echo "haproxy: $(haproxy -v 2>&1 | head -n 1)"
echo "wrk: $(wrk -v 2>&1 | head -n 1 || true)"
echo "sluice: $("$SLUICE" version 2>&1 || true)"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, warm-up $WARMUP, $ROUNDS rounds;" \
    "proxies on CPU $PROXY_CPU, wrk + upstream on CPU $LOAD_CPU"

# A benchmark on a busy machine measures the other load. Say so up front.
idle0=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
sleep 2
idle1=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
busy_before=$(echo "$idle0 $idle1" | awk '{ b = $3 - $1; i = $4 - $2; printf "%d", b * 100 / (b + i + 1e-9) }')
echo "machine busy before start: $busy_before%"
if [ "$busy_before" -gt 10 ]; then
    echo "warning: something else is using the CPUs ($busy_before%); figures will be noisy" >&2
fi

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

# cpu_busy: "busy idle" jiffies of LOAD_CPU then PROXY_CPU, from /proc/stat.
cpu_busy() {
    awk -v l="cpu$LOAD_CPU" -v p="cpu$PROXY_CPU" '
        $1 == l { lb = $2 + $3 + $4 + $7 + $8 + $9; li = $5 + $6 }
        $1 == p { pb = $2 + $3 + $4 + $7 + $8 + $9; pi = $5 + $6 }
        END { print lb, li, pb, pi }' /proc/stat
}

# measure NAME PORT PID ROUND: a warm-up run, then a measured run whose
# figures go to $TMP/results, together with how busy the proxy was (its own
# CPU time) and how busy each of the two CPUs was (anyone's CPU time).
measure() {
    local name=$1 port=$2 pid=$3 round=$4 out t0 t1 c0 c1 b0 b1 cpu busy eff
    out="$TMP/wrk.$name.$round"
    if [ "$WARMUP" != 0 ]; then
        taskset -c "$LOAD_CPU" "${WRK[@]}" -d"$WARMUP" "http://127.0.0.1:$port/" >"$out.warmup" 2>&1 || true
    fi
    c0=0
    [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
    b0=$(cpu_busy)
    t0=$(date +%s.%N)
    if ! taskset -c "$LOAD_CPU" "${WRK[@]}" -d"$DURATION" "http://127.0.0.1:$port/" >"$out" 2>&1; then
        echo "run.sh: wrk failed against $name:" >&2
        cat "$out" >&2
    fi
    t1=$(date +%s.%N)
    b1=$(cpu_busy)
    cpu=-1
    if [ -n "$pid" ]; then
        c1=$(cpu_ticks "$pid")
        cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
            'BEGIN { printf "%.1f", (b - a) / hz / (t1 - t0) * 100 }')
    fi
    # "load% proxy%": share of non-idle time on each CPU during the run
    busy=$(echo "$b0 $b1" | awk '{ lb = $5 - $1; li = $6 - $2; pb = $7 - $3; pi = $8 - $4
        printf "%.1f %.1f", lb * 100 / (lb + li + 1e-9), pb * 100 / (pb + pi + 1e-9) }')
    # shellcheck disable=SC2046 # parse_wrk prints five words
    set -- $(parse_wrk "$out")
    # requests per second of the proxy's own CPU time, this run
    eff=$(awk -v r="$1" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", r / (c / 100); else print -1 }')
    echo "$name $round $1 $2 $3 $4 $5 $cpu $busy $eff" >>"$TMP/results"
    printf '  %-8s round %d: %8.0f req/s  p50 %7.0f us  p99 %7.0f us  errors %d  proxy CPU %s%%  busy: CPU%s %s%%, CPU%s %s%%\n' \
        "$name" "$round" "$1" "$2" "$3" "$4" "${cpu/#-1/-}" "$LOAD_CPU" "${busy% *}" "$PROXY_CPU" "${busy#* }"
    if [ "$4" -gt 0 ]; then
        echo "  !! $name: wrk saw errors; raw output:" >&2
        sed 's/^/     /' "$out" >&2
    fi
}

: >"$TMP/results"
echo "== runs"
# The direct run has no proxy; wrk and the upstream share LOAD_CPU.
measure direct "$UP_PORT" "" 1
for round in $(seq "$ROUNDS"); do
    measure nginx "$NGINX_PORT" "$NGINX_PID" "$round"
    measure haproxy "$HAPROXY_PORT" "$HAPROXY_PID" "$round"
    measure sluice "$SLUICE_PORT" "$SLUICE_PID" "$round"
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

# col_median NAME COLUMN: the median of a results column
# (3 req/s, 4 p50, 5 p99, 8 proxy cpu, 9 and 10 busy CPUs, 11 req per proxy CPU-s)
col_median() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$TMP/results" | median; }
best() { awk -v n="$1" '$1 == n { print $3 }' "$TMP/results" | sort -g | tail -n 1; }
errs() { awk -v n="$1" '$1 == n { e += $6 } END { print e + 0 }' "$TMP/results"; }

echo
echo "== results (median of $ROUNDS runs; best req/s alongside; latency in ms)"
echo
echo "| target | req/s | best req/s | p50 ms | p99 ms | proxy CPU | req per proxy CPU-s | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for name in direct nginx haproxy sluice; do
    rps=$(col_median "$name" 3) p50=$(col_median "$name" 4) p99=$(col_median "$name" 5)
    cpu=$(col_median "$name" 8) eff=$(col_median "$name" 11)
    awk -v n="$name" -v r="$rps" -v b="$(best "$name")" -v a="$p50" -v z="$p99" -v c="$cpu" \
        -v f="$eff" -v e="$(errs "$name")" 'BEGIN {
        cs = c < 0 ? "-" : sprintf("%.0f%%", c)
        fs = f < 0 ? "-" : sprintf("%.0f", f)
        printf "| %s | %.0f | %.0f | %.3f | %.3f | %s | %s | %d |\n", n, r, b, a / 1000, z / 1000, cs, fs, e
    }'
done

echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
S_RPS=$(col_median sluice 3) N_RPS=$(col_median nginx 3) H_RPS=$(col_median haproxy 3)
S_P99=$(col_median sluice 5) N_P99=$(col_median nginx 5) H_P99=$(col_median haproxy 5)
S_EFF=$(col_median sluice 11) N_EFF=$(col_median nginx 11) H_EFF=$(col_median haproxy 11)
echo "sluice/nginx   req/s: $(ratio "$S_RPS" "$N_RPS")   p99: $(ratio "$S_P99" "$N_P99")" \
    "  req per proxy CPU-s: $(ratio "$S_EFF" "$N_EFF")"
echo "sluice/haproxy req/s: $(ratio "$S_RPS" "$H_RPS")   p99: $(ratio "$S_P99" "$H_P99")" \
    "  req per proxy CPU-s: $(ratio "$S_EFF" "$H_EFF")"
echo "(req/s and req per CPU-s: above 1 = sluice does more; p99: below 1 = sluice's tail is shorter)"

# If a proxy did not use (nearly) all of its core, wrk + upstream on the other
# core were the limit, and req/s understates the proxy; req per CPU-s does not.
# If the proxy's CPU was busier than the proxy itself, something else ran
# there (a build, another test): the figures are noisy; run again when quiet.
for name in nginx haproxy sluice; do
    awk -v n="$name" -v c="$(col_median "$name" 8)" -v l="$(col_median "$name" 9)" \
        -v p="$(col_median "$name" 10)" -v lc="$LOAD_CPU" -v pc="$PROXY_CPU" 'BEGIN {
        if (c >= 0 && c < 90 && l >= 90)
            printf "note: %s used %.0f%% of CPU %s while CPU %s (wrk + upstream) was %.0f%% busy: " \
                "the load side was the limit; compare req per proxy CPU-s\n", n, c, pc, lc, l
        if (c >= 0 && p - c > 10)
            printf "noise: CPU %s was %.0f%% busy during %s runs, %s itself used %.0f%%: " \
                "other processes competed; rerun on a quiet machine\n", pc, p, n, n, c
    }'
done
# Nothing of ours runs on PROXY_CPU during the direct run.
awk -v p="$(col_median direct 10)" -v pc="$PROXY_CPU" 'BEGIN { if (p > 10)
    printf "noise: CPU %s was %.0f%% busy during the direct run, which uses no proxy: " \
        "other processes competed; rerun on a quiet machine\n", pc, p }'
