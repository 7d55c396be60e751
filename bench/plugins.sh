#!/bin/bash
# plugins.sh: what one Lua plugin costs, in sluice and in nginx + lua-nginx-module.
#
# Usage: bench/plugins.sh          throughput and latency with wrk, as run.sh measures
#        bench/plugins.sh --jit    LuaJIT's trace log (jit.v, as `luajit -jv`) of sluice's
#                                  worker under load: are there trace aborts on the hot path?
#        bench/plugins.sh --profile  where sluice+noop's worker spends its CPU (perf, sampling
#                                  cpu-clock): the share in Lua (LuaJIT's VM, JIT-compiled
#                                  code, sluice's C glue that enters Lua) is what the no-op
#                                  plugin costs, measured within one run, so it holds on a
#                                  host whose speed drifts between wrk runs
# Environment (all optional):
#   DURATION=10s     wrk duration of each measured run
#   CONNECTIONS=64   wrk connections (the same for every target)
#   THREADS=1        wrk threads
#   ROUNDS=5         measured runs per target, interleaved: all eight targets, then
#                    again in the opposite order, ...
#   WARMUP=2s        wrk run before every measured run, not counted ("0" skips it)
#   PROXY_CPU=1      CPU the proxies are pinned to
#   LOAD_CPU=0       CPU wrk and the upstream nginx are pinned to
#   JIT_REQUESTS=100000  --jit: requests per case (wrk in 1 s runs until there are
#                    at least that many), then as many again: the second batch shows
#                    whether aborts go on once the traces have settled
#   NGINX_MODULES=/usr/lib/nginx/modules  where ndk_http_module.so and
#                    ngx_http_lua_module.so are
#   LUAJIT_LIB=DIR   --jit: the folder holding jit/v.lua (default: found with
#                    `dpkg -L libluajit2-5.1-common`)
#   SLUICE=build/sluice   the binary to measure
#   SKIP_DEPS=1      do not run scripts/deps.sh (e.g. offline)
#   PROFILE_SECONDS=20  --profile: seconds of perf sampling under load
#   KEEP=1           keep the temp dir (configs, logs, wrk output, trace logs)
#
# Targets, one worker each, all pinned to PROXY_CPU, with the same upstream as
# run.sh (nginx, return 200 with a 47-byte JSON body, on LOAD_CPU):
#   sluice           sluice, the route without plugins (no Lua runs per request)
#   sluice+noop      the same route with bench/plugins/noop: an empty access handler
#   sluice+pdk       the same route with bench/plugins/pdk: in access,
#                    sluice.request.get_header("user-agent") and
#                    sluice.service.request.set_header("X-Bench", "1")
#   nginx            nginx proxy_pass with upstream keepalive, as in run.sh
#   nginx+lua-noop   the same with `access_by_lua_block { }`
#   nginx+lua-pdk    the same with `access_by_lua_block { local h =
#                    ngx.var.http_user_agent; ngx.req.set_header("X-Bench", "1") }`
#   sluice+auth      the realistic route: the bundled key-auth and rate-limiting
#                    (policy local, a per-minute limit no run reaches) for 100
#                    consumers with one key each
#   nginx+lua-auth   the same work in lua-nginx-module: the key looked up in a
#                    Lua table built at init, the X-Consumer-* headers set
#                    upstream, ngx.shared.DICT:incr on the consumer's minute, and
#                    Kong's five rate-limit headers added in header_filter_by_lua
# wrk sends "User-Agent: wrk" (it sends none by default) so that the header
# both pdk variants read is there to find, and "apikey: bench-key-7" for the
# auth variants (the others ignore it).
set -eu

MODE=bench
case "${1:-}" in
    "") ;;
    --jit) MODE=jit ;;
    --profile) MODE=profile ;;
    -h | --help)
        sed -n '2,/^set -eu$/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: bench/plugins.sh [--jit | --profile]" >&2
        exit 2
        ;;
esac

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2s}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
JIT_REQUESTS=${JIT_REQUESTS:-100000}
NGINX_MODULES=${NGINX_MODULES:-/usr/lib/nginx/modules}
USER_AGENT="wrk"
APIKEY="bench-key-7"
RATE_LIMIT=1000000000

# wrk, nginx with the lua module, and curl come from the test dependency set.
[ "${SKIP_DEPS:-0}" = 1 ] || scripts/deps.sh test

require_sluice
# Anything still running 2 s after its stop signal at exit gets SIGKILL.
bench_tmp plugins 2000
# As run.sh: every nginx may open 8192 files; no proxy closes a keep-alive
# connection after some number of requests.
NGINX_NOFILE=8192
LIFT_KEEPALIVE=1
NAME_WIDTH=14

if [ "$(nproc)" -lt 2 ]; then
    echo "plugins.sh: needs 2 CPUs to pin the proxies apart from the load; found $(nproc)" >&2
    exit 1
fi

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }

print_machine "nginx: $(nginx -v 2>&1), lua module $(pkg_version libnginx-mod-http-lua)" \
    "luajit: libluajit2 $(pkg_version libluajit2-5.1-2) (sluice and nginx's lua module)"

# A benchmark on a busy machine measures the other load. Say so up front.
machine_busy_check

# --- the upstream ----------------------------------------------------------

# /x-bench answers with the X-Bench request header it got, /x-consumer with
# X-Consumer-Username: how this script checks that the pdk variants and the
# auth variants really did their work. The measured path is /.
# shellcheck disable=SC2016 # $http_x_bench is nginx's variable
UPSTREAM_SERVER='location = /x-bench { return 200 "$http_x_bench"; }
        location = /x-consumer { return 200 "$http_x_consumer_username"; }'
upstream_conf 4096 "keepalive_timeout 75s;"
start_upstream taskset -c "$LOAD_CPU"

# check NAME PORT: exits unless NAME answers / with 200 and the upstream's body.
check() {
    local name=$1 port=$2 code
    code=$(curl -s -o "$TMP/check.$name" -w '%{http_code}' --max-time 5 \
        -A "$USER_AGENT" -H "apikey: $APIKEY" "http://127.0.0.1:$port/") || true
    if [ "$code" != 200 ] || [ "$(cat "$TMP/check.$name")" != "$UPSTREAM_BODY" ]; then
        echo "plugins.sh: $name answered HTTP ${code:-nothing} with: $(head -c 300 "$TMP/check.$name")" >&2
        cat "$TMP/$name"/*.log >&2 || true
        exit 1
    fi
}

# x_bench PORT: the X-Bench header the upstream got through the proxy on PORT.
x_bench() { curl -s --max-time 5 -A "$USER_AGENT" -H "apikey: $APIKEY" "http://127.0.0.1:$1/x-bench" || true; }
# x_consumer PORT: the X-Consumer-Username the upstream got through PORT.
x_consumer() { curl -s --max-time 5 -H "apikey: $APIKEY" "http://127.0.0.1:$1/x-consumer" || true; }
# no_key PORT: the status of a request without a key through PORT.
no_key() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1/" || true; }


# ===========================================================================
# --jit: LuaJIT's trace log of the worker under load
# ===========================================================================

# jit_report LOG MARK N1 N2: what the trace log says: LOG's first MARK lines
# were written during the first N1 requests, the rest during the next N2.
jit_report() {
    local log=$1 mark=$2 n1=$3 n2=$4 total first traces flushes ours
    total=$(grep -c '^\[TRACE ---' "$log") || true
    first=$(head -n "$mark" "$log" | grep -c '^\[TRACE ---') || true
    traces=$(grep -cE '^\[TRACE +[0-9]+ ' "$log") || true
    flushes=$(grep -c '^\[TRACE flush\]' "$log") || true
    echo "traces compiled: $traces; trace flushes: $flushes"
    echo "JIT trace aborts on the hot path: $total" \
        "(first $n1 requests: $first; next $n2 requests: $((total - first)))"
    if [ "$total" -gt 0 ]; then
        # "[TRACE --- (PARENT/EXIT) START -- REASON at WHERE]": grouped without
        # the trace numbers, which differ from run to run.
        echo "  count  trace start -- abort reason [at where recording stopped]"
        sed -n 's/^\[TRACE --- \(([0-9]*\/[0-9a-z]*) \)\{0,1\}\(.*\)\]$/\2/p' "$log" |
            sort | uniq -c | sort -rn | awk '{ n = $1; $1 = ""; printf "  %5d %s\n", n, $0 }'
        ours=$(grep '^\[TRACE ---' "$log" | grep -cE '(pdk|runner)\.lua:') || true
        echo "  of them in sluice's PDK or plugin runner (pdk.lua, runner.lua): $ours"
    fi
    # A stitch is not an abort: the trace ends at a builtin LuaJIT does not
    # compile, the interpreter calls it, and a new trace goes on after it.
    if grep -qE '^\[TRACE +[0-9]+ .* stitch [^ ]+\]$' "$log"; then
        echo "  stitched, not aborted: the trace ends at a builtin LuaJIT does not compile" \
            "(count, builtin -> where the next trace starts)"
        awk '
            $3 ~ /^\([0-9]+\/stitch\)$/ { p = $3; gsub(/[^0-9]/, "", p); cont[p] = $4 }
            $2 ~ /^[0-9]+$/ && $(NF - 1) == "stitch" { f = $NF; sub(/\]$/, "", f); fn[$2] = f; order[++k] = $2 }
            END { for (i = 1; i <= k; i++) { t = order[i]; print fn[t], "->", (t in cont) ? cont[t] : "?" } }
        ' "$log" | sort | uniq -c | sort -rn | awk '{ n = $1; $1 = ""; printf "  %5d %s\n", n, $0 }'
    fi
}

# jit_requests PORT N: wrk (the measuring runs' command line) at PORT on
# LOAD_CPU in runs of 1 s until at least N requests were answered; prints how
# many. Exits if wrk saw any error or non-2xx answer.
jit_requests() {
    local port=$1 want=$2 sum=0 out=$TMP/jit.wrk
    while [ "$sum" -lt "$want" ]; do
        taskset -c "$LOAD_CPU" "${WRK[@]}" -d1s "http://127.0.0.1:$port/" >"$out" 2>&1 || true
        # shellcheck disable=SC2046 # parse_wrk prints five words
        set -- $(parse_wrk "$out")
        if [ "$4" -gt 0 ] || [ "$5" -eq 0 ]; then
            echo "plugins.sh: wrk saw errors or no answers:" >&2
            cat "$out" >&2
            exit 1
        fi
        sum=$((sum + $5))
    done
    echo "$sum"
}

WRK=(wrk "-t$THREADS" "-c$CONNECTIONS" --latency -H "User-Agent: $USER_AGENT" -H "apikey: $APIKEY")

if [ "$MODE" = jit ]; then
    # jit.v ships with LuaJIT, outside sluice's package.path; the bench plugins
    # add LUAJIT_LIB to package.path before requiring it.
    if [ -z "${LUAJIT_LIB:-}" ]; then
        v=$(dpkg -L libluajit2-5.1-common 2>/dev/null | grep '/jit/v\.lua$' | head -n 1) || true
        if [ -z "$v" ]; then
            for f in /usr/share/luajit*/jit/v.lua /usr/local/share/luajit*/jit/v.lua; do
                [ -f "$f" ] && { v=$f; break; }
            done
        fi
        LUAJIT_LIB=${v%/jit/v.lua}
    fi
    if [ ! -f "$LUAJIT_LIB/jit/v.lua" ]; then
        echo "plugins.sh: LuaJIT's jit/v.lua not found; set LUAJIT_LIB to its folder" >&2
        exit 1
    fi
    echo "jit.v: $LUAJIT_LIB/jit/v.lua; per case $JIT_REQUESTS requests, then $JIT_REQUESTS more," \
        "from ${WRK[*]} in 1 s runs on CPU $LOAD_CPU; sluice on CPU $PROXY_CPU"
    # jit.v prints file names without their folder.
    echo "locations as jit.v prints them: pdk.lua and runner.lua are lua/sluice/*; handler.lua is" \
        "bench/plugins/noop/handler.lua (access at line $(grep -n 'access = function' bench/plugins/noop/handler.lua | cut -d: -f1))" \
        "or bench/plugins/pdk/handler.lua (access at line $(grep -n 'access = function' bench/plugins/pdk/handler.lua | cut -d: -f1))"
    # Three cases: each plugin alone on the route, then both on it (a chain of
    # two: the runner's loop calls two different handlers).
    for plugins in noop pdk "noop pdk"; do
        name=jit-${plugins// /+}
        SLUICE_PLUGINS=$plugins
        sluice_conf "$name" JIT_PORT
        SLUICE_PLUGINS=""
        # The plugins' init_worker turns jit.v on in the worker's VM when
        # SLUICE_JIT_LOG is set: what the worker traces from then on is
        # request handling, the hot path.
        start_sluice_as JIT_PID "$name" taskset -c "$PROXY_CPU" \
            env SLUICE_JIT_LOG="$TMP/$name/jit.log" SLUICE_JIT_LIB="$LUAJIT_LIB"
        wait_port "$JIT_PORT" || { cat "$TMP/$name"/*.log >&2; exit 1; }
        check "$name" "$JIT_PORT"
        if [ ! -f "$TMP/$name/jit.log" ]; then
            echo "plugins.sh: sluice's worker did not start jit.v; its error log:" >&2
            cat "$TMP/$name/error.log" >&2
            exit 1
        fi
        echo
        echo "== JIT: sluice, route with plugins: $plugins ($(pinned worker "$JIT_PID"))"
        n1=$(jit_requests "$JIT_PORT" "$JIT_REQUESTS")
        mark=$(wc -l <"$TMP/$name/jit.log")
        n2=$(jit_requests "$JIT_PORT" "$JIT_REQUESTS")
        kill -QUIT "$JIT_PID" 2>/dev/null || true
        jit_report "$TMP/$name/jit.log" "$mark" "$n1" "$n2"
        if grep -qE '\[(warn|error|crit|alert|emerg)\]' "$TMP/$name/error.log" 2>/dev/null; then
            echo "  sluice's error log, warnings and errors (last 10):"
            grep -E '\[(warn|error|crit|alert|emerg)\]' "$TMP/$name/error.log" | tail -n 10 | sed 's/^/    /'
        fi
    done
    echo
    echo "(an abort: LuaJIT gave up recording a trace there and that code ran in the interpreter;" \
        "after repeated aborts it blacklists the spot and stops trying. KEEP=1 keeps the full logs.)"
    exit 0
fi

# ===========================================================================
# --profile: the share of sluice+noop's worker CPU spent in Lua
# ===========================================================================

if [ "$MODE" = profile ]; then
    command -v perf >/dev/null || { echo "plugins.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
    PROFILE_SECONDS=${PROFILE_SECONDS:-20}
    SLUICE_PLUGINS=noop
    sluice_conf prof-noop PROF_PORT
    SLUICE_PLUGINS=""
    start_sluice_as PROF_PID prof-noop taskset -c "$PROXY_CPU"
    wait_port "$PROF_PORT" || { cat "$TMP/prof-noop"/*.log >&2; exit 1; }
    check prof-noop "$PROF_PORT"
    worker=$(pgrep -P "$PROF_PID" | head -n 1)
    echo "== profile: sluice+noop ($(pinned worker "$PROF_PID")), ${WRK[*]}," \
        "perf record -e cpu-clock -F 4999 for ${PROFILE_SECONDS}s"
    taskset -c "$LOAD_CPU" "${WRK[@]}" -d"$((PROFILE_SECONDS + 5))s" \
        "http://127.0.0.1:$PROF_PORT/" >"$TMP/prof.wrk" 2>&1 &
    wrk_pid=$!
    sleep 3 # past the warm-up: traces compiled
    # perf stops on SIGTERM and writes its data; in a session of its own, so
    # that no signal of its reaches this script.
    setsid perf record -q -e cpu-clock -F 4999 -p "$worker" -o "$TMP/perf.data" \
        >"$TMP/perf.log" 2>&1 &
    perf_pid=$!
    sleep "$PROFILE_SECONDS"
    kill -TERM "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
    echo "wrk: $(grep -E 'Requests/sec' "$TMP/prof.wrk" | awk '{ print $2 }') req/s"
    # Shares of the worker's samples: by object (the LuaJIT library, its JIT
    # code, sluice), then sluice's own functions that run only for Lua.
    perf report -i "$TMP/perf.data" --no-children --sort dso -q 2>/dev/null >"$TMP/prof.dso"
    perf report -i "$TMP/perf.data" --no-children --sort sym -q --dsos sluice 2>/dev/null \
        >"$TMP/prof.sym"
    share() { awk -v re="$1" '$0 ~ re { gsub("%", "", $1); s += $1 } END { printf "%.2f", s }' "$2"; }
    vm=$(share 'libluajit' "$TMP/prof.dso")
    jit=$(share '\[JIT\]' "$TMP/prof.dso")
    glue=$(share 'sl_lua_|task_|lua_result|lua_continue|sl_ffi_' "$TMP/prof.sym")
    total=$(awk -v a="$vm" -v b="$jit" -v c="$glue" 'BEGIN { printf "%.2f", a + b + c }')
    echo "share of the worker's CPU samples: LuaJIT VM ${vm}%, JIT-compiled code ${jit}%," \
        "sluice's Lua glue ${glue}%"
    echo "no-op plugin cost (Lua's share of sluice+noop's CPU): ${total}% (target <= 3%:" \
        "$(awk -v t="$total" 'BEGIN { print (t <= 3) ? "met" : "missed" }'))"
    echo "top objects:"
    head -n 6 "$TMP/prof.dso" | sed 's/^/  /'
    exit 0
fi

# ===========================================================================
# throughput: eight targets, interleaved
# ===========================================================================

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -H 'User-Agent: $USER_AGENT'," \
    "warm-up $WARMUP, $ROUNDS rounds; proxies on CPU $PROXY_CPU, wrk + upstream on CPU $LOAD_CPU"

for m in ndk_http_module ngx_http_lua_module; do
    if [ ! -f "$NGINX_MODULES/$m.so" ]; then
        echo "plugins.sh: $NGINX_MODULES/$m.so not found (apt-get install libnginx-mod-http-lua," \
            "or set NGINX_MODULES)" >&2
        exit 1
    fi
done

# nginx: as run.sh's; then the same with the lua module and an access_by_lua_block.
nginx_proxy_conf_as nginx NGINX_PORT 4096 "keepalive_timeout 75s;"
NGINX_MAIN="load_module $NGINX_MODULES/ndk_http_module.so;
load_module $NGINX_MODULES/ngx_http_lua_module.so;"
NGINX_LOCATION='access_by_lua_block { }'
nginx_proxy_conf_as nginx+lua-noop LUA_NOOP_PORT 4096 "keepalive_timeout 75s;"
NGINX_LOCATION='access_by_lua_block { local h = ngx.var.http_user_agent; ngx.req.set_header("X-Bench", "1") }'
nginx_proxy_conf_as nginx+lua-pdk LUA_PDK_PORT 4096 "keepalive_timeout 75s;"
# The auth pair's consumers: bench-key-1 .. bench-key-100 belong to bench1 .. bench100.
NGINX_LOCATION="access_by_lua_block {
                local c = KEYS[ngx.var.http_apikey]
                if not c then
                    ngx.header['WWW-Authenticate'] = 'Key realm=\"kong\"'
                    return ngx.exit(401)
                end
                ngx.req.set_header('X-Consumer-ID', c.id)
                ngx.req.set_header('X-Consumer-Username', c.username)
                ngx.req.set_header('X-Credential-Identifier', c.credential)
                ngx.req.clear_header('X-Anonymous-Consumer')
                local now = ngx.time()
                local n = ngx.shared.rl:incr(c.id .. ':' .. (now - now % 60), 1, 0, 60)
                if n > $RATE_LIMIT then
                    return ngx.exit(429)
                end
                ngx.ctx.remaining, ngx.ctx.reset = $RATE_LIMIT - n, 60 - now % 60
            }
            header_filter_by_lua_block {
                local remaining = ngx.ctx.remaining
                if remaining then
                    ngx.header['X-RateLimit-Limit-Minute'] = '$RATE_LIMIT'
                    ngx.header['X-RateLimit-Remaining-Minute'] = remaining
                    ngx.header['RateLimit-Limit'] = '$RATE_LIMIT'
                    ngx.header['RateLimit-Remaining'] = remaining
                    ngx.header['RateLimit-Reset'] = ngx.ctx.reset
                end
            }"
nginx_proxy_conf_as nginx+lua-auth LUA_AUTH_PORT 4096 "keepalive_timeout 75s;" \
    "lua_shared_dict rl 10m;" \
    "init_by_lua_block { KEYS = {} for i = 1, 100 do KEYS['bench-key-' .. i] = { id = 'consumer-' .. i, username = 'bench' .. i, credential = 'credential-' .. i } end }"
NGINX_MAIN="" NGINX_LOCATION=""

# sluice: as run.sh's; then the same route with one plugin.
sluice_conf sluice SLUICE_PORT
SLUICE_PLUGINS=noop
sluice_conf sluice+noop NOOP_PORT
SLUICE_PLUGINS=pdk
sluice_conf sluice+pdk PDK_PORT
SLUICE_PLUGINS=""
SLUICE_ROUTE_YAML="          - name: key-auth
          - name: rate-limiting
            config: { minute: $RATE_LIMIT, policy: local }"
SLUICE_DOC_YAML=$(
    echo "consumers:"
    for i in $(seq 100); do
        echo "  - { username: bench$i, keyauth_credentials: [{ key: bench-key-$i }] }"
    done
)
sluice_conf sluice+auth AUTH_PORT
SLUICE_ROUTE_YAML="" SLUICE_DOC_YAML=""

start_sluice_as SLUICE_PID sluice taskset -c "$PROXY_CPU"
start_sluice_as NOOP_PID sluice+noop taskset -c "$PROXY_CPU"
start_sluice_as PDK_PID sluice+pdk taskset -c "$PROXY_CPU"
start_nginx NGINX_PID nginx taskset -c "$PROXY_CPU"
start_nginx LUA_NOOP_PID nginx+lua-noop taskset -c "$PROXY_CPU"
start_nginx LUA_PDK_PID nginx+lua-pdk taskset -c "$PROXY_CPU"
start_sluice_as AUTH_PID sluice+auth taskset -c "$PROXY_CPU"
start_nginx LUA_AUTH_PID nginx+lua-auth taskset -c "$PROXY_CPU"

# TARGETS: "name:port:pid", in the order of the table.
TARGETS="sluice:$SLUICE_PORT:$SLUICE_PID sluice+noop:$NOOP_PORT:$NOOP_PID
sluice+pdk:$PDK_PORT:$PDK_PID nginx:$NGINX_PORT:$NGINX_PID
nginx+lua-noop:$LUA_NOOP_PORT:$LUA_NOOP_PID nginx+lua-pdk:$LUA_PDK_PORT:$LUA_PDK_PID
sluice+auth:$AUTH_PORT:$AUTH_PID nginx+lua-auth:$LUA_AUTH_PORT:$LUA_AUTH_PID"
# ORDER: the order of the odd rounds; even rounds run it backwards, so that a
# steady drift of the machine hits every target alike. Each pair the ratios
# compare is measured back to back, except sluice+pdk against sluice.
ORDER="sluice sluice+noop nginx+lua-noop nginx nginx+lua-pdk sluice+pdk sluice+auth nginx+lua-auth"

pinning=""
for t in $TARGETS; do
    name=${t%%:*} rest=${t#*:}
    if ! wait_port "${rest%%:*}"; then
        echo "plugins.sh: $name did not start; its logs:" >&2
        cat "$TMP/$name"/*.log >&2 || true
        exit 1
    fi
    pinning="$pinning $(pinned "$name" "${rest#*:}")"
done
echo "pinning (worker processes):$pinning upstream=CPU$LOAD_CPU wrk=CPU$LOAD_CPU"
# What each sluice runs per request, as `sluice check --routes` says.
for name in sluice sluice+noop sluice+pdk sluice+auth; do
    chain=$("$SLUICE" check -c "$TMP/$name/sluice.yaml" --routes |
        awk '/^plugin chains/ { f = 1; next } /^[^ ]/ { f = 0 } f { $1 = ""; print }') || true
    echo "$name route plugins:${chain:- (none)}"
done

# Each target must answer 200 with the upstream's body before it is measured,
# and only the pdk variants may pass X-Bench on.
for t in $TARGETS; do
    name=${t%%:*} rest=${t#*:}
    check "$name" "${rest%%:*}"
    want=""
    case $name in *pdk) want=1 ;; esac
    got=$(x_bench "${rest%%:*}")
    if [ "$got" != "$want" ]; then
        echo "plugins.sh: through $name the upstream got X-Bench '$got', expected '$want'" >&2
        cat "$TMP/$name"/*.log >&2 || true
        exit 1
    fi
    case $name in *auth) want="bench7 401" ;; *) want=" 200" ;; esac
    got="$(x_consumer "${rest%%:*}") $(no_key "${rest%%:*}")"
    if [ "$got" != "$want" ]; then
        echo "plugins.sh: through $name: X-Consumer-Username and the status without a key" \
            "were '$got', expected '$want'" >&2
        cat "$TMP/$name"/*.log >&2 || true
        exit 1
    fi
done

echo "== runs"
measure_rounds
# What the proxies logged above notice level (sluice) or at warn and above
# (nginx: lua errors land there) while under load is worth seeing.
for t in $TARGETS; do
    name=${t%%:*}
    if grep -qE '\[(warn|error|crit|alert|emerg)\]' "$TMP/$name/error.log" 2>/dev/null; then
        echo "== $name error log: warnings and errors (last 10)"
        grep -E '\[(warn|error|crit|alert|emerg)\]' "$TMP/$name/error.log" | tail -n 10
    fi
done

# --- the table and the ratios ----------------------------------------------

NAMES=""
for t in $TARGETS; do NAMES="$NAMES ${t%%:*}"; done

echo
echo "== results (median of $ROUNDS runs; best req/s alongside; latency in ms)"
echo
# shellcheck disable=SC2086 # a list of names
results_table $NAMES
echo

echo "== plugins: ratios. per CPU-s = requests per second of the proxy's own CPU time;"
echo "   'rounds' = the median (min .. max) of each round's own pair of runs, per CPU-s"
ratio_header
line "noop cost: 1 - (sluice+noop)/(sluice)" cost sluice+noop sluice "<= 3"
line "sluice+noop / nginx+lua-noop" ratio sluice+noop nginx+lua-noop ">= 1.1"
line "sluice+pdk / nginx+lua-pdk" ratio sluice+pdk nginx+lua-pdk
line "pdk cost: 1 - (sluice+pdk)/(sluice)" cost sluice+pdk sluice
line "sluice+auth / nginx+lua-auth" ratio sluice+auth nginx+lua-auth ">= 1.2"
line "auth cost: 1 - (sluice+auth)/(sluice)" cost sluice+auth sluice "<= 10"
line "nginx's lua noop cost: 1 - (nginx+lua-noop)/(nginx)" cost nginx+lua-noop nginx
line "sluice / nginx, no plugins" ratio sluice nginx
echo
awk -v l="$(col_median sluice 9)" -v c="$(col_median sluice 8)" -v lc="$LOAD_CPU" -v pc="$PROXY_CPU" 'BEGIN {
    printf "On this 2-core box wrk and the upstream share CPU %s and saturate it first (%.0f%% busy during\n", lc, l
    printf "the plain sluice runs, while sluice used %.0f%% of CPU %s): req/s mostly measures the load side,\n", c, pc
    print "so req per proxy CPU-s, the CPU-normalized figure, is the fairer comparison. The targets are"
    print "judged on it, round by round: each round measures the pairs within a minute of each other, so"
    print "a drift in the speed of the machine between rounds cancels out of their ratios."
}'
# shellcheck disable=SC2086 # a list of names
load_notes $NAMES
