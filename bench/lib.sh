# shellcheck shell=bash
# lib.sh: the setup run.sh, plugins.sh, idle.sh and alloc.sh share: a temp
# dir removed on exit, free ports, the upstream nginx every proxy forwards to,
# nginx as a proxy, and sluice. Sourced (not run) by those scripts, first thing after
# `set -eu`: it moves to the repository root and defines things; it starts
# nothing by itself.
#
# Settings a script may change after sourcing (they apply to every server
# the functions below configure for it):
#   NGINX_NOFILE=N     worker_rlimit_nofile N in every nginx config ("": none)
#   BACKLOG=N          listen backlog=N on every nginx and sluice listener ("": default)
#   LIFT_KEEPALIVE=1   no request limit per keep-alive connection on the proxies,
#                      client side and upstream side (the upstream nginx has none
#                      in any case)
# and (they apply to the configs written while they are set):
#   NGINX_MAIN="..."      lines for the main context of an nginx config (load_module)
#   NGINX_LOCATION="..."  lines at the top of nginx_proxy_conf's location /
#                         (access_by_lua_block { ... })
#   SLUICE_PLUGINS="a b"  plugins (from bench/plugins) on sluice_conf's route
#   SLUICE_ROUTE_YAML="..." YAML list items for the route's plugins: (bundled ones
#                         with their config), indented for sluice_conf's route
#   SLUICE_DOC_YAML="..."  top-level YAML appended to sluice_conf's file (consumers:)
#   SLUICE_SERVICE_PATH="/x" the path of sluice_conf's service URL ("": none)
#   UPSTREAM_SERVER="..." lines in the upstream's server block (extra locations)
#
# The second half (wrk_measure and what goes with it) is the wrk measuring
# run.sh and plugins.sh share.

# Everything runs from the repository root, whatever the caller's directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$(pwd)
SLUICE=${SLUICE:-$ROOT/build/sluice}   # the binary to measure

BENCH=${0##*/}     # the calling script's name, for its messages
PIDS=""            # "PID:SIGNAL ..." of what was started, for cleanup
USED_PORTS=""      # ports free_port has handed out
NGINX_NOFILE=""
BACKLOG=""
LIFT_KEEPALIVE=0
NGINX_MAIN=""
NGINX_LOCATION=""
SLUICE_PLUGINS=""
SLUICE_ROUTE_YAML=""
SLUICE_DOC_YAML=""
SLUICE_SERVICE_PATH=""
UPSTREAM_SERVER=""
# What the upstream answers to every request.
UPSTREAM_BODY='{"status":"ok","message":"hello from upstream"}'

# require_sluice: exits with a message unless $SLUICE is an executable.
require_sluice() {
    if [ ! -x "$SLUICE" ]; then
        echo "$BENCH: $SLUICE not found; build it first (make build)" >&2
        exit 1
    fi
}

# bench_tmp NAME GRACE_MS: makes the temp dir TMP (sluice-NAME.XXXXXX) and has
# cleanup run on exit, Ctrl-C included; GRACE_MS is how long cleanup gives
# the processes to stop before killing them.
bench_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-$1.XXXXXX")
    GRACE_MS=$2
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# cleanup: stops everything in PIDS, each with its own signal (sluice gets
# SIGQUIT, its "stop --now": no drain wait; nginx and haproxy SIGTERM, their
# fast shutdown); whatever is still alive GRACE_MS later, workers included,
# gets SIGKILL. Then removes TMP, or with KEEP=1 keeps it and prints its path.
cleanup() {
    trap - EXIT INT TERM
    local spec pid kid alive
    for spec in $PIDS; do
        pid=${spec%%:*}
        kill -"${spec#*:}" "$pid" 2>/dev/null || true
    done
    for _ in $(seq $((GRACE_MS / 100))); do
        alive=""
        for spec in $PIDS; do
            kill -0 "${spec%%:*}" 2>/dev/null && alive=1
        done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    for spec in $PIDS; do
        pid=${spec%%:*}
        for kid in $(pgrep -P "$pid" 2>/dev/null); do kill -KILL "$kid" 2>/dev/null || true; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then
        echo "$BENCH: kept $TMP"
    else
        rm -rf "$TMP"
    fi
}

# free_port VAR: sets VAR to a port nothing on this machine has bound (per
# /proc/net/tcp*) and no earlier call handed out, below the ephemeral range
# so the clients' own source ports cannot take it later.
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

# wait_port PORT: until something accepts on 127.0.0.1:PORT (10 s at most).
wait_port() {
    for _ in $(seq 100); do
        # bash's /dev/tcp: a connect test that needs no extra tool
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# spawn VAR NAME SIGNAL COMMAND...: starts COMMAND in the background, output
# to $TMP/NAME/stdout.log, sets VAR to its pid and has cleanup stop it with
# SIGNAL.
spawn() {
    local var=$1 name=$2 sig=$3
    shift 3
    "$@" >"$TMP/$name/stdout.log" 2>&1 &
    PIDS="$PIDS $!:$sig"
    printf -v "$var" '%s' "$!"
}

# nginx_conf NAME CONNECTIONS [DIRECTIVE...]: writes $TMP/NAME/nginx.conf for
# an nginx in the foreground with one worker, CONNECTIONS worker_connections,
# its error log, pid file and temp paths in $TMP/NAME and no access log. Each
# DIRECTIVE goes into the http block, then stdin (its upstream and server blocks).
nginx_conf() {
    local dir=$TMP/$1 conns=$2 d
    shift 2
    mkdir -p "$dir"
    {
        [ -z "$NGINX_MAIN" ] || echo "$NGINX_MAIN"
        echo "daemon off;"
        echo "worker_processes 1;"
        [ -z "$NGINX_NOFILE" ] || echo "worker_rlimit_nofile $NGINX_NOFILE;"
        echo "error_log $dir/error.log warn;"
        echo "pid $dir/nginx.pid;"
        echo "events { worker_connections $conns; }"
        echo "http {"
        echo "    access_log off;"
        for d in "$@"; do echo "    $d"; done
        echo "    client_body_temp_path $dir/body;"
        echo "    proxy_temp_path $dir/proxy;"
        cat
        echo "}"
    } >"$dir/nginx.conf"
}

# start_nginx VAR NAME [PREFIX...]: starts nginx on $TMP/NAME/nginx.conf,
# through PREFIX if given (e.g. taskset -c 1); VAR is its master's pid.
start_nginx() {
    local var=$1 name=$2
    shift 2
    spawn "$var" "$name" TERM "$@" nginx -p "$TMP/$name" -e "$TMP/$name/error.log" \
        -c "$TMP/$name/nginx.conf"
}

# upstream_conf CONNECTIONS [DIRECTIVE...]: sets UP_PORT and writes the
# upstream's config ($TMP/upstream): nginx answering every request with 200
# and UPSTREAM_BODY. keepalive_requests is raised so no connection (a
# client's or a proxy's pool) is ever closed mid-run by the upstream; that
# would measure reconnects. DIRECTIVEs as for nginx_conf.
upstream_conf() {
    local conns=$1
    shift
    free_port UP_PORT
    nginx_conf upstream "$conns" "keepalive_requests 1000000;" "$@" <<EOF
    server {
        listen 127.0.0.1:$UP_PORT${BACKLOG:+ backlog=$BACKLOG};${UPSTREAM_SERVER:+
        $UPSTREAM_SERVER}
        location / {
            default_type application/json;
            return 200 '$UPSTREAM_BODY';
        }
    }
EOF
}

# start_upstream [PREFIX...]: starts the upstream upstream_conf wrote (through
# PREFIX if given), sets UP_PID and waits for its port; exits with its error
# log if it does not come up.
# shellcheck disable=SC2120 # PREFIX is optional
start_upstream() {
    start_nginx UP_PID upstream "$@"
    wait_port "$UP_PORT" || { cat "$TMP/upstream/error.log" >&2; exit 1; }
}

# nginx_proxy_conf CONNECTIONS [DIRECTIVE...]: sets NGINX_PORT and writes the
# config ($TMP/nginx) of nginx as a proxy to the upstream, keeping upstream
# connections alive the documented way: an upstream block with keepalive,
# HTTP/1.1 and an empty Connection header. DIRECTIVEs as for nginx_conf.
# Start it with start_nginx VAR nginx.
nginx_proxy_conf() {
    nginx_proxy_conf_as nginx NGINX_PORT "$@"
}

# nginx_proxy_conf_as NAME PORT_VAR CONNECTIONS [DIRECTIVE...]: the same, for
# an nginx named NAME ($TMP/NAME) whose port goes to PORT_VAR. Start it with
# start_nginx VAR NAME.
nginx_proxy_conf_as() {
    local name=$1 portvar=$2 conns=$3 lift="" port
    shift 3
    free_port "$portvar"
    port=${!portvar}
    if [ "$LIFT_KEEPALIVE" = 1 ]; then
        lift="keepalive_requests 1000000;"
        set -- "$lift" "$@"
    fi
    nginx_conf "$name" "$conns" "$@" <<EOF
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;${lift:+
        $lift}
    }
    server {
        listen 127.0.0.1:$port${BACKLOG:+ backlog=$BACKLOG};
        location / {${NGINX_LOCATION:+
            $NGINX_LOCATION}
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
}

# start_sluice [PREFIX...]: sets SLUICE_PORT, writes $TMP/sluice/sluice.yaml
# (one worker, no access log, every path routed to the upstream) and starts
# sluice on it through PREFIX if given; SLUICE_PID is its master's pid. It
# does not wait for the port.
# shellcheck disable=SC2120 # PREFIX is optional
start_sluice() {
    sluice_conf sluice SLUICE_PORT
    start_sluice_as SLUICE_PID sluice "$@"
}

# sluice_conf NAME PORT_VAR: sets PORT_VAR to a free port and writes
# $TMP/NAME/sluice.yaml: one worker, no access log, every path routed to the
# upstream, through the SLUICE_PLUGINS (found in bench/plugins) and the
# SLUICE_ROUTE_YAML plugins if any, with SLUICE_DOC_YAML at the end.
sluice_conf() {
    local name=$1 portvar=$2 port p
    free_port "$portvar"
    port=${!portvar}
    mkdir -p "$TMP/$name"
    {
        cat <<EOF
_format_version: "3.0"
server:
  listen: ["127.0.0.1:$port${BACKLOG:+ backlog=$BACKLOG}"]
  workers: 1
  pid_file: $TMP/$name/sluice.pid
  access_log: "off"
  error_log: $TMP/$name/error.log
EOF
        if [ "$LIFT_KEEPALIVE" = 1 ]; then
            echo "  keepalive_requests: 1000000"
            echo "  upstream_keepalive_max_requests: 0"
        fi
        [ -z "$SLUICE_PLUGINS" ] || echo "  plugin_paths: [\"$ROOT/bench/plugins\"]"
        cat <<EOF
services:
  - name: bench
    url: http://127.0.0.1:$UP_PORT$SLUICE_SERVICE_PATH
    routes:
      - name: all
        paths: ["/"]
EOF
        if [ -n "$SLUICE_PLUGINS$SLUICE_ROUTE_YAML" ]; then
            echo "        plugins:"
            for p in $SLUICE_PLUGINS; do echo "          - name: $p"; done
            [ -z "$SLUICE_ROUTE_YAML" ] || echo "$SLUICE_ROUTE_YAML"
        fi
        [ -z "$SLUICE_DOC_YAML" ] || echo "$SLUICE_DOC_YAML"
    } >"$TMP/$name/sluice.yaml"
}

# start_sluice_as VAR NAME [PREFIX...]: starts sluice on $TMP/NAME/sluice.yaml
# (from sluice_conf) through PREFIX if given; VAR is its master's pid. It
# does not wait for the port.
start_sluice_as() {
    local var=$1 name=$2
    shift 2
    spawn "$var" "$name" QUIT "$@" "$SLUICE" start -c "$TMP/$name/sluice.yaml"
}

# print_machine [LINE...]: the machine (cores, CPU, kernel), the LINEs (the
# versions of the other servers a script runs), then wrk's and sluice's versions.
print_machine() {
    local line
    echo "== machine"
    echo "nproc: $(nproc)"
    echo "cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "kernel: $(uname -sr)"
    for line in "$@"; do echo "$line"; done
    echo "wrk: $(wrk -v 2>&1 | head -n 1 || true)"
    echo "sluice: $("$SLUICE" version 2>&1 || true)"
}

# --- measuring with wrk (run.sh, plugins.sh) --------------------------------
#
# A script sets, before calling wrk_measure:
#   WRK=(wrk -t.. -c.. --latency ...)  the wrk command line, without -d and URL
#   DURATION, WARMUP                   measured run and warm-up ("0": none) lengths
#   LOAD_CPU, PROXY_CPU                CPUs of wrk + upstream and of the proxies
#   NAME_WIDTH                         width of the target names in the run lines
# Every measured run appends one line to $TMP/results:
#   name round req/s p50_us p99_us errors requests proxy_cpu% load_cpu_busy%
#   proxy_cpu_busy% req_per_proxy_cpu_s

CLK_TCK=$(getconf CLK_TCK)
NAME_WIDTH=8

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

# machine_busy_check: how busy the machine was over 2 s before anything
# started; a warning when above 10%: a benchmark on a busy machine measures
# the other load.
machine_busy_check() {
    local idle0 idle1 busy_before
    idle0=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 2
    idle1=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    busy_before=$(echo "$idle0 $idle1" | awk '{ b = $3 - $1; i = $4 - $2; printf "%d", b * 100 / (b + i + 1e-9) }')
    echo "machine busy before start: $busy_before%"
    if [ "$busy_before" -gt 10 ]; then
        echo "warning: something else is using the CPUs ($busy_before%); figures will be noisy" >&2
    fi
}

# cpu_busy: "busy idle" jiffies of LOAD_CPU then PROXY_CPU, from /proc/stat.
cpu_busy() {
    awk -v l="cpu$LOAD_CPU" -v p="cpu$PROXY_CPU" '
        $1 == l { lb = $2 + $3 + $4 + $7 + $8 + $9; li = $5 + $6 }
        $1 == p { pb = $2 + $3 + $4 + $7 + $8 + $9; pi = $5 + $6 }
        END { print lb, li, pb, pi }' /proc/stat
}

# wrk_measure NAME PORT PID ROUND: a warm-up run, then a measured run whose
# figures go to $TMP/results, together with how busy the proxy was (its own
# CPU time) and how busy each of the two CPUs was (anyone's CPU time). PID ""
# means no proxy (wrk straight at the upstream).
wrk_measure() {
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
        echo "$BENCH: wrk failed against $name:" >&2
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
    printf "  %-${NAME_WIDTH}s round %d: %8.0f req/s  p50 %7.0f us  p99 %7.0f us  errors %d  proxy CPU %s%%  busy: CPU%s %s%%, CPU%s %s%%\n" \
        "$name" "$round" "$1" "$2" "$3" "$4" "${cpu/#-1/-}" "$LOAD_CPU" "${busy% *}" "$PROXY_CPU" "${busy#* }"
    if [ "$4" -gt 0 ]; then
        echo "  !! $name: wrk saw errors; raw output:" >&2
        sed 's/^/     /' "$out" >&2
    fi
}

# measure_rounds: ROUNDS rounds of wrk_measure over TARGETS ("name:port:pid",
# space or newline separated) in the order of ORDER (names), every even round
# backwards, so that a steady drift of the machine hits every target alike;
# then a line for each target whose proxy died under load.
measure_rounds() {
    local reversed round order name t rest
    : >"$TMP/results"
    reversed=$(echo "$ORDER" | tr ' ' '\n' | tac | tr '\n' ' ')
    for round in $(seq "$ROUNDS"); do
        order=$ORDER
        [ $((round % 2)) = 0 ] && order=$reversed
        for name in $order; do
            for t in $TARGETS; do
                [ "${t%%:*}" = "$name" ] || continue
                rest=${t#*:}
                wrk_measure "$name" "${rest%%:*}" "${rest#*:}" "$round"
            done
        done
    done
    for t in $TARGETS; do
        kill -0 "${t##*:}" 2>/dev/null || echo "!! ${t%%:*} (pid ${t##*:}) is no longer running" >&2
    done
}

# col_median NAME COLUMN: the median of a results column
# (3 req/s, 4 p50, 5 p99, 8 proxy cpu, 9 and 10 busy CPUs, 11 req per proxy CPU-s)
col_median() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$TMP/results" | median; }
# best NAME: the highest req/s of NAME's runs.
best() { awk -v n="$1" '$1 == n { print $3 }' "$TMP/results" | sort -g | tail -n 1; }
# errs NAME: errors over all of NAME's runs.
errs() { awk -v n="$1" '$1 == n { e += $6 } END { print e + 0 }' "$TMP/results"; }
# ratio A B: A/B with two decimals ("n/a" when B is not positive).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# --- ratios of two targets (plugins.sh, features.sh) ------------------------

# of_medians KIND A B COL: over the medians of COL (3 req/s, 11 req per proxy
# CPU-s) of targets A and B: KIND cost = 1 - A/B in percent, ratio = A/B.
of_medians() {
    awk -v k="$1" -v a="$(col_median "$2" "$4")" -v b="$(col_median "$3" "$4")" 'BEGIN {
        if (b <= 0 || a < 0) print "n/a"
        else if (k == "cost") printf "%.1f%%", (1 - a / b) * 100
        else printf "%.2f", a / b }'
}
# of_rounds KIND A B [COL]: the same for each round's own pair of runs, of COL
# (default 11, per CPU-s): "MEDIAN MIN MAX", numbers only (percent for cost).
of_rounds() {
    awk -v k="$1" -v an="$2" -v bn="$3" -v c="${4:-11}" '
        $1 == an { a[$2] = $c } $1 == bn { b[$2] = $c }
        END { for (r in a) if ((r in b) && a[r] > 0 && b[r] > 0)
            print (k == "cost") ? (1 - a[r] / b[r]) * 100 : a[r] / b[r] }' "$TMP/results" |
        sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-1 -1 -1"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print m, v[1], v[NR] }'
}
# line LABEL KIND A B [TARGET] [COL]: one line of ratios (of the medians of
# req/s and of req per CPU-s, then of the rounds' own pairs); TARGET "<= 3" or
# ">= 1.1" is judged on the median of the rounds' own pairs of COL (default
# 11, per CPU-s; 3 judges req/s). Print ratio_header first.
line() {
    local label=$1 kind=$2 a=$3 b=$4 target=${5:-} col=${6:-11} rounds verdict=""
    rounds=$(of_rounds "$kind" "$a" "$b" "$col")
    if [ -n "$target" ]; then
        verdict=$(awk -v m="${rounds%% *}" -v op="${target% *}" -v l="${target#* }" \
            -v on="$([ "$col" = 3 ] && echo ", req/s")" 'BEGIN {
            ok = (op == "<=") ? m <= l : m >= l
            printf "target %s %s%s: %s", op, l, on, ok ? "met" : "missed" }')
        [ "$kind" = cost ] && verdict="${verdict/: /%: }"
    fi
    # shellcheck disable=SC2086 # three numbers
    printf '%-50s %7s %9s %s  %s\n' "$label" "$(of_medians "$kind" "$a" "$b" 3)" \
        "$(of_medians "$kind" "$a" "$b" 11)" \
        "$(awk -v k="$kind" -v m="$rounds" 'BEGIN { split(m, v, " ")
            if (v[1] == -1 && v[2] == -1) { printf "%-22s", "n/a"; exit }
            if (k == "cost") printf "%-22s", sprintf("%.1f%% (%.1f .. %.1f)", v[1], v[2], v[3])
            else printf "%-22s", sprintf("%.2f (%.2f .. %.2f)", v[1], v[2], v[3]) }')" "$verdict"
}


# ratio_header: the header line over line's columns.
ratio_header() {
    printf '%-50s %7s %9s %s\n' "" "req/s" "per CPU-s" "rounds, per CPU-s (or as the target says)"
}

# pinned NAME PID: "NAME=CPUn" for the worker of master PID.
pinned() {
    local pid
    pid=$(pgrep -P "$2" | head -n 1) || true
    [ -n "$pid" ] && echo "$1=CPU$(taskset -pc "$pid" | awk '{ print $NF }')"
}

# results_table NAME...: the Markdown table of the medians, one row per NAME.
results_table() {
    local name rps p50 p99 cpu eff
    echo "| target | req/s | best req/s | p50 ms | p99 ms | proxy CPU | req per proxy CPU-s | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for name in "$@"; do
        rps=$(col_median "$name" 3) p50=$(col_median "$name" 4) p99=$(col_median "$name" 5)
        cpu=$(col_median "$name" 8) eff=$(col_median "$name" 11)
        awk -v n="$name" -v r="$rps" -v b="$(best "$name")" -v a="$p50" -v z="$p99" -v c="$cpu" \
            -v f="$eff" -v e="$(errs "$name")" 'BEGIN {
            cs = c < 0 ? "-" : sprintf("%.0f%%", c)
            fs = f < 0 ? "-" : sprintf("%.0f", f)
            printf "| %s | %.0f | %.0f | %.3f | %.3f | %s | %s | %d |\n", n, r, b, a / 1000, z / 1000, cs, fs, e
        }'
    done
}

# load_notes NAME...: for each proxy NAME, a note when it did not use (nearly)
# all of its core while wrk + upstream on the other core were saturated (then
# req/s understates the proxy and req per CPU-s does not), and a noise line
# when its CPU was busier than the proxy itself (something else ran there: a
# build, another test; the figures are noisy, run again when quiet): over the
# medians, or else in single runs; and a noise line when the same proxy's
# requests per CPU-second differ by more than 15% between its runs.
load_notes() {
    local name
    for name in "$@"; do
        awk -v n="$name" -v c="$(col_median "$name" 8)" -v l="$(col_median "$name" 9)" \
            -v p="$(col_median "$name" 10)" -v lc="$LOAD_CPU" -v pc="$PROXY_CPU" \
            -v runs="$(awk -v n="$name" '$1 == n { r++; if ($8 >= 0 && $10 - $8 > 10) b++
                    if ($11 > 0) { if (lo == "" || $11 < lo) lo = $11; if ($11 > hi) hi = $11 } }
                END { print b + 0, r + 0, lo + 0, hi + 0 }' "$TMP/results")" \
            -v f="$(col_median "$name" 11)" 'BEGIN {
            split(runs, r, " ")
            if (c >= 0 && c < 90 && l >= 90)
                printf "note: %s used %.0f%% of CPU %s while CPU %s (wrk + upstream) was %.0f%% busy: " \
                    "the load side was the limit; compare req per proxy CPU-s\n", n, c, pc, lc, l
            if (c >= 0 && p - c > 10)
                printf "noise: CPU %s was %.0f%% busy during %s runs, %s itself used %.0f%%: " \
                    "other processes competed; rerun on a quiet machine\n", pc, p, n, n, c
            else if (r[1] > 0)
                printf "noise: in %d of %d %s runs CPU %s was over 10 points busier than %s itself: " \
                    "other processes competed; the medians may hold, a rerun on a quiet machine is safer\n",
                    r[1], r[2], n, pc, n
            # The same proxy doing the same work at a different CPU cost per
            # request: the machine itself changed speed (on a VM, a busy host
            # steals time the guest cannot see).
            if (f > 0 && r[2] > 1 && (r[4] - r[3]) / f > 0.15)
                printf "noise: %s served %.0f to %.0f req per proxy CPU-s over its runs " \
                    "(median %.0f): the speed of the machine changed; rerun, or raise ROUNDS\n",
                    n, r[3], r[4], f
        }'
    done
}
