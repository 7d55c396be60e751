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

cd "$(dirname "$0")/.."
ROOT=$(pwd)

N=${N:-10000}
PARALLEL=${PARALLEL:-16}
SETTLE=${SETTLE:-2}
SLUICE=${SLUICE:-$ROOT/build/sluice}

if [ ! -x "$SLUICE" ]; then
    echo "idle.sh: $SLUICE not found; build it first (make build)" >&2
    exit 1
fi

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

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-idle.XXXXXX")
PIDS=""

cleanup() {
    trap - EXIT INT TERM
    local spec pid
    for spec in $PIDS; do
        pid=${spec%%:*}
        kill -"${spec#*:}" "$pid" 2>/dev/null || true
    done
    sleep 0.5
    for spec in $PIDS; do
        pid=${spec%%:*}
        for kid in $(pgrep -P "$pid" 2>/dev/null); do kill -KILL "$kid" 2>/dev/null || true; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "idle.sh: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=""
# free_port VAR: a port no socket on this machine has bound (per /proc/net/tcp*).
free_port() {
    local p hex
    while :; do
        p=$((20000 + RANDOM % 12000))
        case " $USED_PORTS " in *" $p "*) continue ;; esac
        hex=$(printf ':%04X' "$p")
        if ! awk -v h="$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
            /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            USED_PORTS="$USED_PORTS $p"
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

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

free_port UP_PORT
mkdir -p "$TMP/upstream"
cat >"$TMP/upstream/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log $TMP/upstream/error.log warn;
pid $TMP/upstream/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/upstream/body;
    proxy_temp_path $TMP/upstream/proxy;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        location / {
            default_type application/json;
            return 200 '{"status":"ok","message":"hello from upstream"}';
        }
    }
}
EOF
nginx -p "$TMP/upstream" -e "$TMP/upstream/error.log" -c "$TMP/upstream/nginx.conf" \
    >"$TMP/upstream/stdout.log" 2>&1 &
PIDS="$PIDS $!:TERM"
wait_port "$UP_PORT" || { cat "$TMP/upstream/error.log" >&2; exit 1; }

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
free_port SLUICE_PORT
mkdir -p "$TMP/sluice"
cat >"$TMP/sluice/sluice.yaml" <<EOF
_format_version: "3.0"
server:
  listen: ["127.0.0.1:$SLUICE_PORT backlog=4096"]
  workers: 1
  pid_file: $TMP/sluice/sluice.pid
  access_log: "off"
  error_log: $TMP/sluice/error.log
services:
  - name: bench
    url: http://127.0.0.1:$UP_PORT
    routes:
      - name: all
        paths: ["/"]
EOF
"$SLUICE" start -c "$TMP/sluice/sluice.yaml" >"$TMP/sluice/stdout.log" 2>&1 &
SLUICE_PID=$!
PIDS="$PIDS $SLUICE_PID:QUIT"
echo "== sluice ($N idle connections, $PARALLEL requests in flight)" >&2
RESULTS="$RESULTS$(measure sluice "$SLUICE_PORT" "$SLUICE_PID")
"
kill -QUIT "$SLUICE_PID" 2>/dev/null || true

# nginx as the same proxy: one worker, upstream keepalive, enough connections.
free_port NGINX_PORT
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log $TMP/nginx/error.log warn;
pid $TMP/nginx/nginx.pid;
events { worker_connections $((2 * N + 1024)); }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" \
    >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS="$PIDS $NGINX_PID:TERM"
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
