# shellcheck shell=bash
# lib.sh: the setup run.sh, idle.sh and alloc.sh share: a temp dir removed on
# exit, free ports, the upstream nginx every proxy forwards to, nginx as a
# proxy, and sluice. Sourced (not run) by those scripts, first thing after
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
        listen 127.0.0.1:$UP_PORT${BACKLOG:+ backlog=$BACKLOG};
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
    local conns=$1 lift=""
    shift
    free_port NGINX_PORT
    if [ "$LIFT_KEEPALIVE" = 1 ]; then
        lift="keepalive_requests 1000000;"
        set -- "$lift" "$@"
    fi
    nginx_conf nginx "$conns" "$@" <<EOF
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;${lift:+
        $lift}
    }
    server {
        listen 127.0.0.1:$NGINX_PORT${BACKLOG:+ backlog=$BACKLOG};
        location / {
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
    free_port SLUICE_PORT
    mkdir -p "$TMP/sluice"
    {
        cat <<EOF
_format_version: "3.0"
server:
  listen: ["127.0.0.1:$SLUICE_PORT${BACKLOG:+ backlog=$BACKLOG}"]
  workers: 1
  pid_file: $TMP/sluice/sluice.pid
  access_log: "off"
  error_log: $TMP/sluice/error.log
EOF
        if [ "$LIFT_KEEPALIVE" = 1 ]; then
            echo "  keepalive_requests: 1000000"
            echo "  upstream_keepalive_max_requests: 0"
        fi
        cat <<EOF
services:
  - name: bench
    url: http://127.0.0.1:$UP_PORT
    routes:
      - name: all
        paths: ["/"]
EOF
    } >"$TMP/sluice/sluice.yaml"
    spawn SLUICE_PID sluice QUIT "$@" "$SLUICE" start -c "$TMP/sluice/sluice.yaml"
}
