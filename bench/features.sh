#!/bin/bash
# features.sh: what the transformation, composition, caching and metrics plugins cost.
#
# Usage: bench/features.sh
# Environment (all optional): DURATION=10s CONNECTIONS=64 THREADS=1 ROUNDS=3
#   WARMUP=2s PROXY_CPU=1 LOAD_CPU=0 SLUICE=build/sluice SKIP_DEPS=1 KEEP=1,
#   as in plugins.sh.
#
# Targets, one worker each, pinned to PROXY_CPU, with run.sh's upstream (nginx
# on LOAD_CPU; a few more locations, below):
#   sluice          the plain proxy: / (a 47-byte body)
#   sluice+req-tf   request-transformer adding 3 headers (one of them a template)
#   sluice-1k       the plain proxy to /json1k (a 1 KiB JSON body)
#   sluice+resp-tf  response-transformer on that body: a field added, one
#                   removed, a header added (the body is buffered and re-framed)
#   sluice+compose  compose over 3 backends of the upstream (/a, /b, /c) called
#                   at once, merged into one JSON answer
#   sluice+cache    proxy-cache on /, every measured request a hit
#   sluice+prom     the prometheus plugin (global, every metric family on):
#                   every request counted in shared memory by the C core
#   nginx           nginx proxy_pass with upstream keepalive, as in run.sh
#   nginx+cache     nginx proxy_cache on /, every measured request a hit
# Targets: a cache hit serves >= 1.5x the plain proxy's req/s; prometheus
# costs <= 3%.
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

[ "${SKIP_DEPS:-0}" = 1 ] || scripts/deps.sh test

require_sluice
bench_tmp features 2000
NGINX_NOFILE=8192
LIFT_KEEPALIVE=1
NAME_WIDTH=14

print_machine "nginx: $(nginx -v 2>&1)"
machine_busy_check

# --- the upstream ----------------------------------------------------------

# A 1 KiB JSON document (1024 bytes exactly) for the response-transformer pair.
JSON1K='{"id":42,"debug":"trace-0001","items":['
i=0
while [ ${#JSON1K} -lt 980 ]; do
    JSON1K="$JSON1K{\"sku\":\"item-$i\",\"qty\":$i},"
    i=$((i + 1))
done
JSON1K="${JSON1K%,}],\"pad\":\""
while [ ${#JSON1K} -lt 1022 ]; do JSON1K="${JSON1K}x"; done
JSON1K="$JSON1K\"}"
UPSTREAM_SERVER="location ^~ /json1k { default_type application/json; return 200 '$JSON1K'; }
        location = /a { default_type application/json; return 200 '{\"user\":{\"id\":1,\"name\":\"Ada\"}}'; }
        location = /b { default_type application/json; return 200 '{\"orders\":[1,2,3]}'; }
        location = /c { default_type application/json; return 200 '{\"score\":0.93}'; }"
upstream_conf 4096 "keepalive_timeout 75s;" "default_type application/json;"
start_upstream taskset -c "$LOAD_CPU"

# --- the targets -------------------------------------------------------------

sluice_conf sluice SLUICE_PORT
SLUICE_ROUTE_YAML="          - name: request-transformer
            config:
              add:
                headers: ['X-Tenant:acme', 'X-Request-Source:gateway', 'X-Client:\$(headers.user_agent)']"
sluice_conf sluice+req-tf REQ_PORT
SLUICE_ROUTE_YAML="" SLUICE_SERVICE_PATH="/json1k"
sluice_conf sluice-1k ONEK_PORT
SLUICE_ROUTE_YAML="          - name: response-transformer
            config:
              remove: { json: [debug] }
              add: { json: ['served_by:sluice'], headers: ['X-Transformed:1'] }"
sluice_conf sluice+resp-tf RESP_PORT
SLUICE_SERVICE_PATH=""
SLUICE_ROUTE_YAML="          - name: compose
            config:
              meta: false
              backends:
                - { name: user, url: 'http://127.0.0.1:$UP_PORT', path: /a }
                - { name: orders, url: 'http://127.0.0.1:$UP_PORT', path: /b }
                - { name: score, url: 'http://127.0.0.1:$UP_PORT', path: /c }"
sluice_conf sluice+compose COMPOSE_PORT
SLUICE_ROUTE_YAML="          - name: proxy-cache
            config: { cache_ttl: 3600, content_type: ['application/json', 'text/plain'] }"
sluice_conf sluice+cache CACHE_PORT
SLUICE_ROUTE_YAML=""
SLUICE_DOC_YAML="plugins:
  - name: prometheus
    config: { status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true,
              upstream_health_metrics: true }"
sluice_conf sluice+prom PROM_PORT
SLUICE_DOC_YAML=""

nginx_proxy_conf_as nginx NGINX_PORT 4096 "keepalive_timeout 75s;"
NGINX_LOCATION="proxy_cache c; proxy_cache_valid 200 1h;"
nginx_proxy_conf_as nginx+cache NCACHE_PORT 4096 "keepalive_timeout 75s;" \
    "proxy_cache_path $TMP/nginx+cache/cache keys_zone=c:10m;"
NGINX_LOCATION=""
# nginx's workers run as nobody when started as root: let them reach the cache.
chmod 0711 "$TMP" "$TMP/nginx+cache"

start_sluice_as SLUICE_PID sluice taskset -c "$PROXY_CPU"
start_sluice_as REQ_PID sluice+req-tf taskset -c "$PROXY_CPU"
start_sluice_as ONEK_PID sluice-1k taskset -c "$PROXY_CPU"
start_sluice_as RESP_PID sluice+resp-tf taskset -c "$PROXY_CPU"
start_sluice_as COMPOSE_PID sluice+compose taskset -c "$PROXY_CPU"
start_sluice_as CACHE_PID sluice+cache taskset -c "$PROXY_CPU"
start_sluice_as PROM_PID sluice+prom taskset -c "$PROXY_CPU"
start_nginx NGINX_PID nginx taskset -c "$PROXY_CPU"
start_nginx NCACHE_PID nginx+cache taskset -c "$PROXY_CPU"

TARGETS="sluice:$SLUICE_PORT:$SLUICE_PID sluice+req-tf:$REQ_PORT:$REQ_PID
sluice-1k:$ONEK_PORT:$ONEK_PID sluice+resp-tf:$RESP_PORT:$RESP_PID
sluice+compose:$COMPOSE_PORT:$COMPOSE_PID sluice+cache:$CACHE_PORT:$CACHE_PID
sluice+prom:$PROM_PORT:$PROM_PID nginx:$NGINX_PORT:$NGINX_PID nginx+cache:$NCACHE_PORT:$NCACHE_PID"
# Pairs the ratios compare run back to back; even rounds run backwards.
ORDER="sluice sluice+prom sluice+cache nginx+cache nginx sluice+req-tf sluice-1k sluice+resp-tf sluice+compose"

for t in $TARGETS; do
    name=${t%%:*} rest=${t#*:}
    if ! wait_port "${rest%%:*}"; then
        echo "features.sh: $name did not start; its logs:" >&2
        cat "$TMP/$name"/*.log >&2 || true
        exit 1
    fi
done

# expect NAME PORT WHAT TEXT: exits unless / on PORT answers 200 and WHAT
# (body or headers) holds TEXT.
expect() {
    local name=$1 port=$2 what=$3 text=$4 out
    out=$(curl -s -D "$TMP/head.$name" -o "$TMP/body.$name" -w '%{http_code}' --max-time 5 \
        "http://127.0.0.1:$port/") || true
    if [ "$out" != 200 ] || ! grep -qF -- "$text" "$TMP/$what.$name"; then
        echo "features.sh: $name answered $out without '$text' in its $what:" >&2
        cat "$TMP/head.$name" "$TMP/body.$name" >&2
        cat "$TMP/$name"/*.log >&2 || true
        exit 1
    fi
}
expect sluice "$SLUICE_PORT" body "$UPSTREAM_BODY"
expect nginx "$NGINX_PORT" body "$UPSTREAM_BODY"
expect sluice+req-tf "$REQ_PORT" body "$UPSTREAM_BODY"
expect sluice-1k "$ONEK_PORT" body "$JSON1K"
expect sluice+resp-tf "$RESP_PORT" body '"served_by":"sluice"'
expect sluice+resp-tf "$RESP_PORT" head 'X-Transformed: 1'
expect sluice+compose "$COMPOSE_PORT" body '"score":0.93'
expect sluice+cache "$CACHE_PORT" body "$UPSTREAM_BODY"
expect sluice+cache "$CACHE_PORT" head 'X-Cache-Status: Hit'
expect sluice+prom "$PROM_PORT" body "$UPSTREAM_BODY"
expect nginx+cache "$NCACHE_PORT" body "$UPSTREAM_BODY"
echo "checked: every target answers as it should (a transformed body, a composed one, cache hits)"

WRK=(wrk "-t$THREADS" "-c$CONNECTIONS" --latency)
echo "== runs (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, warm-up $WARMUP, $ROUNDS rounds)"
measure_rounds

NAMES=""
for t in $TARGETS; do NAMES="$NAMES ${t%%:*}"; done
echo
echo "== results (median of $ROUNDS runs; best req/s alongside; latency in ms)"
echo
# shellcheck disable=SC2086 # a list of names
results_table $NAMES
echo
echo "== ratios"
ratio_header
line "cache hit / plain proxy: (sluice+cache)/(sluice)" ratio sluice+cache sluice ">= 1.5" 3
line "sluice+cache / nginx+cache" ratio sluice+cache nginx+cache
line "prometheus cost: 1 - (sluice+prom)/(sluice)" cost sluice+prom sluice "<= 3"
line "request-transformer (3 headers) cost" cost sluice+req-tf sluice
line "response-transformer (1 KiB JSON) cost" cost sluice+resp-tf sluice-1k
line "compose over 3 backends / plain proxy" ratio sluice+compose sluice
line "sluice / nginx, no plugins" ratio sluice nginx
# shellcheck disable=SC2086 # a list of names
load_notes $NAMES
