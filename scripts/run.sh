#!/usr/bin/env bash
# Runs the spend-cap demo gateway on 127.0.0.1:8080 (Debian 12, as root on a fresh
# machine: installs what is missing).
#
#   scripts/run.sh [start]   build, start Redis (if none answers), the fake provider
#                            (unless UPSTREAM is set) and NGINX; restarts what it
#                            started before. NGINX runs in the background.
#   scripts/run.sh stop      stop everything this script started
#   scripts/run.sh status    show what is running
#   scripts/run.sh render    only write the rendered configuration ($prefix/conf/nginx.conf)
#
# Environment:
#   UPSTREAM=https://api.openai.com   proxy to this instead of the local fake provider
#   UPSTREAM_KEY=sk-...               the provider's API key, sent upstream in place of the
#                                     caller's spend-cap key (Authorization: Bearer, or
#                                     x-api-key when UPSTREAM is Anthropic's); the caller's
#                                     key is never sent on, in either header
#   UPSTREAM_KEY_HEADER=x-api-key     which header carries UPSTREAM_KEY (authorization or
#                                     x-api-key; default: by UPSTREAM, as above)
#   FOREGROUND=1                      keep NGINX in the foreground (daemon off); Ctrl-C
#                                     stops it and the fake provider
#   PORT=8080                         the gateway's port on 127.0.0.1
#   ADMIN_PORT=8081                   the management API's port on 127.0.0.1 (its token:
#                                     build/run/conf/admin.token, made on the first run)
#   POLICY=conf/policy.yaml           the policy file (edit it, then re-run to apply)
#   SKIP_BUILD=1                      use build/ngx_http_spend_cap_module.so as it is
#   RUN_DIR=build/run, MODULE=..., REDIS_PORT=6379, FAKE_PORT=9100
#                                     where it all lives, the module loaded, the ports
#                                     of Redis and the fake provider (the tests render
#                                     the configuration with these)
#
# Everything runtime lives in build/run/: conf/, logs/ (error.log, access.log,
# fake_provider.log, redis.log), and the pid files.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=$(realpath -m "${RUN_DIR:-$root/build/run}")
module=$(realpath -m "${MODULE:-$root/build/ngx_http_spend_cap_module.so}")
nginx_bin=${NGINX:-/usr/sbin/nginx}
port=${PORT:-8080}
admin_port=${ADMIN_PORT:-8081}
policy=$(realpath -m "${POLICY:-$root/conf/policy.yaml}")
upstream=${UPSTREAM:-}
upstream_key=${UPSTREAM_KEY:-}
upstream_key_header=${UPSTREAM_KEY_HEADER:-}
fake_port=${FAKE_PORT:-9100}
redis_port=${REDIS_PORT:-6379}

say() { printf 'run.sh: %s\n' "$*"; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

# 0 if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid in file $1 if that process is alive and its command line contains $2.
live_pid() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
    echo "$pid"
}

# Stops the process of pid file $1 (command line containing $2, called $3): signal $4
# (TERM by default), after 10s TERM again (for NGINX: fast shutdown), after 15s KILL.
stop_pidfile() {
    local pid i
    if pid=$(live_pid "$1" "$2"); then
        kill -"${4:-TERM}" "$pid" 2>/dev/null || true
        for i in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            [ "$i" = 100 ] && kill -TERM "$pid" 2>/dev/null
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$3 (pid $pid) did not exit; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "stopped $3 (pid $pid)"
    fi
    rm -f "$1"
}

stop_nginx() { stop_pidfile "$prefix/nginx.pid" "nginx: master process" nginx QUIT; }
stop_fake()  { stop_pidfile "$prefix/fake_provider.pid" "fake_provider.py" "fake provider"; }
stop_redis() { stop_pidfile "$prefix/redis.pid" "redis-server" redis; }
remove_temp() {
    if [ -f "$prefix/tempdir" ]; then
        rm -rf -- "$(cat "$prefix/tempdir")"
        rm -f "$prefix/tempdir"
    fi
}

stop_all() {
    stop_nginx
    stop_fake
    stop_redis
    remove_temp
}

status() {
    local pid
    if pid=$(live_pid "$prefix/nginx.pid" "nginx: master process"); then
        say "nginx: running (master pid $pid), http://127.0.0.1:$port"
    else
        say "nginx: not running"
    fi
    if pid=$(live_pid "$prefix/fake_provider.pid" "fake_provider.py"); then
        say "fake provider: running (pid $pid), http://127.0.0.1:$fake_port"
    else
        say "fake provider: not running"
    fi
    if pid=$(live_pid "$prefix/redis.pid" "redis-server"); then
        say "redis: started by run.sh (pid $pid), 127.0.0.1:$redis_port"
    elif redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
        say "redis: 127.0.0.1:$redis_port answers (not started by run.sh)"
    else
        say "redis: not answering on 127.0.0.1:$redis_port"
    fi
}

install_missing() {
    # package:command-or-file pairs
    local pairs=("redis-server:/usr/bin/redis-server" "redis-tools:/usr/bin/redis-cli"
                 "curl:/usr/bin/curl" "ca-certificates:/etc/ssl/certs/ca-certificates.crt")
    [ -n "$upstream" ] || pairs+=("python3:/usr/bin/python3")
    local missing=() p
    for p in "${pairs[@]}"; do
        [ -e "${p#*:}" ] || missing+=("${p%%:*}")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        die "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    fi
}

start_redis() {
    if redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
        if live_pid "$prefix/redis.pid" "redis-server" >/dev/null; then
            say "redis: keeping the one an earlier run.sh started on 127.0.0.1:$redis_port"
        else
            say "redis: using the one answering on 127.0.0.1:$redis_port"
        fi
        return
    fi
    port_open "$redis_port" && \
        die "127.0.0.1:$redis_port is taken but does not answer redis-cli ping (a Redis with a password?)"
    mkdir -p "$prefix/redis"
    redis-server --bind 127.0.0.1 --port "$redis_port" --daemonize yes \
        --pidfile "$prefix/redis.pid" --dir "$prefix/redis" \
        --logfile "$prefix/logs/redis.log" --appendonly yes --save ""
    local i
    for i in $(seq 1 50); do
        redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG \
        || die "redis-server did not start; see $prefix/logs/redis.log"
    say "redis: started on 127.0.0.1:$redis_port (data in $prefix/redis)"
}

start_fake() {
    local script="$root/t/fake_provider.py" pid i
    [ -f "$script" ] || die "$script is missing; set UPSTREAM=https://... to use a real provider"
    port_open "$fake_port" && die "127.0.0.1:$fake_port is taken; stop what listens there or set UPSTREAM"
    setsid nohup /usr/bin/python3 "$script" --host 127.0.0.1 --port "$fake_port" \
        >> "$prefix/logs/fake_provider.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$prefix/fake_provider.pid"
    for i in $(seq 1 50); do
        port_open "$fake_port" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    port_open "$fake_port" || die "the fake provider did not start; see $prefix/logs/fake_provider.log"
    say "fake provider: started on 127.0.0.1:$fake_port (pid $pid)"
}

# Renders conf/nginx.conf with this checkout's paths into $prefix/conf/nginx.conf.
render_conf() {
    local out="$prefix/conf/nginx.conf" temp auth_line
    local upstream_url=${upstream:-http://127.0.0.1:$fake_port}
    upstream_url=${upstream_url%/}
    mkdir -p "$prefix/conf" "$prefix/logs"

    # Workers run as nobody when the master is root: NGINX's temp dirs must be
    # reachable by them. A checkout under /root is not; use a temp dir then.
    temp="$prefix/temp"
    if [ "$(id -u)" = 0 ] && ! runuser -u nobody -- test -x "$prefix/." 2>/dev/null; then
        temp=$(mktemp -d /tmp/spend-cap-run.XXXXXX)
        chmod 755 "$temp"
        echo "$temp" > "$prefix/tempdir"
    fi
    mkdir -p "$temp"

    local e=() q
    esc() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
    e+=(-e "s|^load_module .*ngx_http_spend_cap_module\.so;|load_module $(esc "$module");|")
    e+=(-e "s|^error_log .*;|error_log $(esc "$prefix")/logs/error.log notice;|")
    e+=(-e "s|^pid .*;|pid $(esc "$prefix")/nginx.pid;|")
    e+=(-e "s|^\( *\)spend_cap_redis .*;|\1spend_cap_redis  127.0.0.1:$redis_port;|")
    e+=(-e "s|^\( *\)spend_cap_policy .*;|\1spend_cap_policy $(esc "$policy");|")
    e+=(-e "s|^\( *\)access_log .*;|\1access_log $(esc "$prefix")/logs/access.log spend_cap;|")
    e+=(-e "s|^\( *\)listen 127\.0\.0\.1:8080;|\1listen 127.0.0.1:$port;|")
    e+=(-e "s|^\( *\)listen 127\.0\.0\.1:8081;|\1listen 127.0.0.1:$admin_port;|")
    e+=(-e "s|^\( *\)spend_cap_admin .*;|\1spend_cap_admin $(esc "$prefix")/conf/admin.token;|")
    e+=(-e "s|^\( *\)proxy_pass https://api\.openai\.com;|\1proxy_pass $(esc "$upstream_url");|")
    q=$(esc "$temp")
    e+=(-e "s|^http {|http {\n    client_body_temp_path $q/client_body;\n    proxy_temp_path $q/proxy;\n    fastcgi_temp_path $q/fastcgi;\n    uwsgi_temp_path $q/uwsgi;\n    scgi_temp_path $q/scgi;\n|")
    # The caller's key is cleared from both headers that may carry it; the
    # provider's own key, if given, replaces one of them.
    if [ -n "$upstream_key" ]; then
        [[ "$upstream_key" =~ ^[A-Za-z0-9._-]+$ ]] || die "UPSTREAM_KEY has unexpected characters"
        if [ -z "$upstream_key_header" ]; then
            upstream_key_header=authorization
            [[ "$upstream_url" != *anthropic* ]] || upstream_key_header=x-api-key
        fi
        case "$upstream_key_header" in
            x-api-key)
                auth_line="proxy_set_header x-api-key \"$upstream_key\";"
                e+=(-e "s|^\( *\)proxy_set_header x-api-key \"\";|\1$auth_line|") ;;
            authorization)
                auth_line="proxy_set_header Authorization \"Bearer $upstream_key\";"
                e+=(-e "s|^\( *\)proxy_set_header Authorization \"\";|\1$auth_line|") ;;
            *) die "UPSTREAM_KEY_HEADER must be authorization or x-api-key" ;;
        esac
    fi
    sed "${e[@]}" "$root/conf/nginx.conf" > "$out.new"

    # The demo's admin token: made once, readable by root only, kept across runs.
    if [ ! -s "$prefix/conf/admin.token" ]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$prefix/conf/admin.token")
        echo >> "$prefix/conf/admin.token"
    fi
    chmod 600 "$prefix/conf/admin.token"

    # Fail loudly if conf/nginx.conf changed shape and a line was not rendered.
    local want
    set --
    [ -z "$upstream_key" ] || set -- "$auth_line"
    [ "$upstream_key_header" = authorization ] || set -- "$@" 'proxy_set_header Authorization "";'
    [ "$upstream_key_header" = x-api-key ] || set -- "$@" 'proxy_set_header x-api-key "";'
    for want in "$@" "load_module $module;" "pid $prefix/nginx.pid;" \
                "spend_cap_policy $policy;" "access_log $prefix/logs/access.log" \
                "listen 127.0.0.1:$port;" "proxy_pass $upstream_url;" \
                "listen 127.0.0.1:$admin_port;" "spend_cap_admin $prefix/conf/admin.token;" \
                "error_log $prefix/logs/error.log" "client_body_temp_path $temp/"; do
        grep -qF -- "$want" "$out.new" || die "could not render '$want' from conf/nginx.conf"
    done
    chmod 600 "$out.new"   # may hold UPSTREAM_KEY
    mv "$out.new" "$out"
}

nginx_cmd() { "$nginx_bin" -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/conf/nginx.conf" "$@"; }

wait_ready() {
    local i
    for i in $(seq 1 100); do
        curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port/healthz" && return 0
        sleep 0.1
    done
    return 1
}

print_usage() {
    local logs_extra=", redis.log, fake_provider.log"
    [ -z "$upstream" ] || logs_extra=", redis.log"
    local stop_how="scripts/run.sh stop"
    [ "${FOREGROUND:-0}" != 1 ] || stop_how="Ctrl-C (NGINX and the fake provider; then scripts/run.sh stop for Redis)"
    # Anthropic upstream: the Messages API and x-api-key; else Chat Completions.
    local path=/v1/chat/completions auth='Authorization: Bearer' extra=""
    local body='{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}'
    if [[ "$upstream" == *anthropic* ]]; then
        path=/v1/messages auth='x-api-key:' extra=" -H 'anthropic-version: 2023-06-01'"
        body='{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}'
    fi
    cat <<EOF

spend-cap is running on http://127.0.0.1:$port -> ${upstream:-fake provider http://127.0.0.1:$fake_port}
  logs:   $prefix/logs/ (error.log, access.log$logs_extra)
  config: $prefix/conf/nginx.conf (rendered from conf/nginx.conf), policy: $policy
  stop:   $stop_how

An allowed request (200, with x-spend-* headers):

curl -i http://127.0.0.1:$port$path -H '$auth sk-demo-allowed'$extra -H 'Content-Type: application/json' -d '$body'

A capped key (402 spend_limit_exceeded; the request never reaches the provider):

curl -i http://127.0.0.1:$port$path -H '$auth sk-demo-capped'$extra -H 'Content-Type: application/json' -d '$body'

The management API on http://127.0.0.1:$admin_port/spend-cap/ (token in $prefix/conf/admin.token).
Create a key with a \$1 monthly cap (the answer shows its secret, once):

curl -s http://127.0.0.1:$admin_port/spend-cap/keys -H "Authorization: Bearer \$(cat $prefix/conf/admin.token)" -H 'Content-Type: application/json' -d '{"project":"demo-prod","id":"demo_user","limits":{"monthly_usd":"1"}}'

What it has spent, per window, against its caps:

curl -s http://127.0.0.1:$admin_port/spend-cap/keys/demo_user/usage -H "Authorization: Bearer \$(cat $prefix/conf/admin.token)"

Prometheus metrics of this NGINX (requests by decision, blocks by cap, cost, Redis round trip, backlog):

curl -s http://127.0.0.1:$admin_port/metrics

EOF
}

# With the fake provider, try both demo requests once and report what came back.
smoke_check() {
    local body='{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}'
    local a c
    a=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/v1/chat/completions" \
        -H 'Authorization: Bearer sk-demo-allowed' -H 'Content-Type: application/json' -d "$body" || true)
    c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/v1/chat/completions" \
        -H 'Authorization: Bearer sk-demo-capped' -H 'Content-Type: application/json' -d "$body" || true)
    local m
    m=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$admin_port/spend-cap/keys/key_demo_allowed" \
        -H "Authorization: Bearer $(cat "$prefix/conf/admin.token")" || true)
    if [ "$a" = 200 ] && [ "$c" = 402 ] && [ "$m" = 200 ]; then
        say "check: sk-demo-allowed -> $a, sk-demo-capped -> $c, the management API -> $m"
    else
        say "WARNING: sk-demo-allowed -> $a (want 200), sk-demo-capped -> $c (want 402), the management API -> $m (want 200); see $prefix/logs/error.log"
    fi
}

start() {
    [ -x "$nginx_bin" ] || [ "$(id -u)" = 0 ] || die "$nginx_bin not found (run as root to install it)"
    if [ "${SKIP_BUILD:-0}" = 1 ] && [ -f "$module" ]; then
        say "SKIP_BUILD=1: using $module as it is"
    else
        "$root/scripts/build.sh"
    fi
    [ -f "$module" ] || die "$module was not built"
    [ -x "$nginx_bin" ] || die "$nginx_bin not found"
    [ -f "$policy" ] || die "policy file $policy not found"
    install_missing

    mkdir -p "$prefix/logs"
    # Restart cleanly: what a previous run started goes first (Redis stays: it holds
    # the spend counters).
    stop_nginx
    stop_fake
    remove_temp
    if port_open "$port"; then
        if command -v ss >/dev/null; then ss -ltnp "sport = :$port" >&2 || true; fi
        die "127.0.0.1:$port is taken by another program"
    fi

    start_redis
    [ -n "$upstream" ] || start_fake
    render_conf
    nginx_cmd -t -q || die "nginx -t failed for $prefix/conf/nginx.conf"

    if [ "${FOREGROUND:-0}" = 1 ]; then
        "$nginx_bin" -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/conf/nginx.conf" \
            -g 'daemon off;' &
        local npid=$!
        trap 'kill -QUIT $npid 2>/dev/null; wait $npid 2>/dev/null; stop_fake; exit 0' INT TERM
        wait_ready || { kill -QUIT "$npid" 2>/dev/null || true; die "nginx did not answer on 127.0.0.1:$port; see $prefix/logs/error.log"; }
        [ -n "$upstream" ] || smoke_check
        print_usage
        wait "$npid" || true
        stop_fake
    else
        nginx_cmd
        wait_ready || die "nginx did not answer on 127.0.0.1:$port; see $prefix/logs/error.log"
        [ -n "$upstream" ] || smoke_check
        print_usage
    fi
}

case "${1:-start}" in
    start|restart) start ;;
    stop) stop_all ;;
    status) status ;;
    render) mkdir -p "$prefix/logs"; render_conf; echo "$prefix/conf/nginx.conf" ;;
    *) echo "usage: $0 [start|stop|status|render]" >&2; exit 2 ;;
esac
