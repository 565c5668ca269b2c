#!/usr/bin/env bash
# Runs the spend-cap demo gateway on 127.0.0.1:8080 (Debian 12, as root on a fresh
# machine: installs what is missing).
#
#   scripts/run.sh [start]   build, start Redis (if none answers), the fake provider
#                            (unless UPSTREAM is set) and NGINX, then spend-cap-relay
#                            and a local webhook receiver it delivers the events to;
#                            restarts what it started before. NGINX runs in the background.
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
#                                     stops it, the fake provider, the relay and the receiver
#   PORT=8080                         the gateway's port on 127.0.0.1
#   ADMIN_PORT=8081                   the management API's port on 127.0.0.1 (its token:
#                                     build/run/conf/admin.token, made on the first run)
#   POLICY=conf/policy.yaml           the policy file (edit it, then re-run to apply)
#   SKIP_BUILD=1                      use build/ngx_http_spend_cap_module.so as it is
#   RUN_DIR=build/run, MODULE=..., REDIS_PORT=6379, FAKE_PORT=9100
#                                     where it all lives, the module loaded, the ports
#                                     of Redis and the fake provider (the tests render
#                                     the configuration with these)
#   RECEIVER_PORT=9300                the webhook receiver's port on 127.0.0.1
#                                     (t/webhook_receiver.py: it prints what it gets)
#   RELAY_METRICS_PORT=9150           spend-cap-relay's /metrics on 127.0.0.1
#
# Everything runtime lives in build/run/: conf/ (nginx.conf, relay.yaml, admin.token),
# logs/ (error.log, access.log, fake_provider.log, redis.log, relay.log, webhooks.log),
# and the pid files.
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
relay_bin="$root/build/spend-cap-relay"
receiver_port=${RECEIVER_PORT:-9300}
relay_metrics_port=${RELAY_METRICS_PORT:-9150}
# The demo endpoint's Standard Webhooks secret (whsec_ and base64 of 32 bytes): a
# demo's, printed below so that a receiver of your own can verify with it.
demo_webhook_secret=whsec_c3BlbmQtY2FwIGRlbW8gd2ViaG9vayBzZWNyZXQhISE=

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
# SIGTERM: the relay finishes the attempts in flight (the receiver must still be up).
stop_relay() { stop_pidfile "$prefix/relay.pid" "spend-cap-relay" relay; }
stop_receiver() { stop_pidfile "$prefix/webhook_receiver.pid" "webhook_receiver.py" "webhook receiver"; }
remove_temp() {
    if [ -f "$prefix/tempdir" ]; then
        rm -rf -- "$(cat "$prefix/tempdir")"
        rm -f "$prefix/tempdir"
    fi
}

stop_all() {
    stop_nginx
    stop_relay
    stop_receiver
    stop_fake
    stop_redis
    remove_temp
}

# One line: whether what $1 names (its pidfile and command) runs, and where.
say_running() { # $1 name, $2 pidfile, $3 command pattern, $4 where
    local pid
    if pid=$(live_pid "$2" "$3"); then
        say "$1: running (pid $pid), $4"
    else
        say "$1: not running"
    fi
}

status() {
    local pid
    say_running nginx "$prefix/nginx.pid" "nginx: master process" "http://127.0.0.1:$port"
    say_running "fake provider" "$prefix/fake_provider.pid" "fake_provider.py" "http://127.0.0.1:$fake_port"
    say_running relay "$prefix/relay.pid" "spend-cap-relay" "metrics http://127.0.0.1:$relay_metrics_port/metrics"
    say_running "webhook receiver" "$prefix/webhook_receiver.pid" "webhook_receiver.py" \
        "http://127.0.0.1:$receiver_port/hooks"
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
    # python3: the fake provider and the webhook receiver
    local pairs=("redis-server:/usr/bin/redis-server" "redis-tools:/usr/bin/redis-cli"
                 "curl:/usr/bin/curl" "ca-certificates:/etc/ssl/certs/ca-certificates.crt"
                 "python3:/usr/bin/python3")
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

# Starts "$@" in the background, detached, logging to $3 with its pid in $4, and
# waits until it listens on 127.0.0.1:$2; $1 names it in messages.
spawn_listening() {
    local name=$1 listen_port=$2 log=$3 pidfile=$4 pid i
    shift 4
    setsid nohup "$@" >> "$log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$pidfile"
    for i in $(seq 1 50); do
        port_open "$listen_port" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    port_open "$listen_port" || die "$name did not start; see $log"
    spawned_pid=$pid
}

start_fake() {
    local script="$root/t/fake_provider.py"
    [ -f "$script" ] || die "$script is missing; set UPSTREAM=https://... to use a real provider"
    port_open "$fake_port" && die "127.0.0.1:$fake_port is taken; stop what listens there or set UPSTREAM"
    spawn_listening "the fake provider" "$fake_port" "$prefix/logs/fake_provider.log" "$prefix/fake_provider.pid" \
        /usr/bin/python3 "$script" --host 127.0.0.1 --port "$fake_port"
    say "fake provider: started on 127.0.0.1:$fake_port (pid $spawned_pid)"
}

# The webhook receiver of the demo: every delivery one line in webhooks.log.
start_receiver() {
    local script="$root/t/webhook_receiver.py"
    [ -f "$script" ] || die "$script is missing"
    port_open "$receiver_port" && die "127.0.0.1:$receiver_port is taken; stop what listens there or set RECEIVER_PORT"
    spawn_listening "the webhook receiver" "$receiver_port" "$prefix/logs/webhooks.log" \
        "$prefix/webhook_receiver.pid" /usr/bin/python3 "$script" --host 127.0.0.1 --port "$receiver_port" --print
    say "webhook receiver: started on 127.0.0.1:$receiver_port (pid $spawned_pid)"
}

# spend-cap-relay: ready once its metrics port listens (it connected to Redis and
# set up the endpoint's consumer groups before).
start_relay() {
    port_open "$relay_metrics_port" && \
        die "127.0.0.1:$relay_metrics_port is taken; stop what listens there or set RELAY_METRICS_PORT"
    spawn_listening "spend-cap-relay" "$relay_metrics_port" "$prefix/logs/relay.log" "$prefix/relay.pid" \
        "$relay_bin" -c "$prefix/conf/relay.yaml"
    say "relay: started (pid $spawned_pid), delivering to http://127.0.0.1:$receiver_port/hooks"
}

# The relay's file for the demo (conf/relay.yaml is the annotated example): the demo's
# Redis and policy, one signed endpoint, the receiver.
render_relay_conf() {
    local out="$prefix/conf/relay.yaml"
    mkdir -p "$prefix/conf"
    # single-quoted YAML: a ' is written twice
    cat > "$out.new" <<EOF
# Rendered by scripts/run.sh for the demo; conf/relay.yaml is the annotated example.
redis: 127.0.0.1:$redis_port
policy: '${policy//\'/\'\'}'
metrics: 127.0.0.1:$relay_metrics_port
endpoints:
  - name: demo
    url: http://127.0.0.1:$receiver_port/hooks
    secret: $demo_webhook_secret
retry: { first: 1s }
EOF
    chmod 600 "$out.new"
    mv "$out.new" "$out"
    "$relay_bin" --check -c "$out" >/dev/null || die "spend-cap-relay --check failed for $out"
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
    local logs_extra=", redis.log, fake_provider.log, relay.log, webhooks.log"
    [ -z "$upstream" ] || logs_extra=", redis.log, relay.log, webhooks.log"
    local stop_how="scripts/run.sh stop"
    [ "${FOREGROUND:-0}" != 1 ] || stop_how="Ctrl-C (NGINX, the fake provider, the relay and the receiver; then scripts/run.sh stop for Redis)"
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

The dashboard: open http://127.0.0.1:$admin_port/spend-cap/ui/ in a browser (on another machine:
ssh -L $admin_port:127.0.0.1:$admin_port THIS-HOST first) and sign in as the operator with the admin
token (cat $prefix/conf/admin.token), or as a key holder with an API key (e.g. sk-demo-allowed).

The management API on http://127.0.0.1:$admin_port/spend-cap/ (token in $prefix/conf/admin.token).
Create a key with a \$1 monthly cap (the answer shows its secret, once):

curl -s http://127.0.0.1:$admin_port/spend-cap/keys -H "Authorization: Bearer \$(cat $prefix/conf/admin.token)" -H 'Content-Type: application/json' -d '{"project":"demo-prod","id":"demo_user","limits":{"monthly_usd":"1"}}'

What it has spent, per window, against its caps:

curl -s http://127.0.0.1:$admin_port/spend-cap/keys/demo_user/usage -H "Authorization: Bearer \$(cat $prefix/conf/admin.token)"

Prometheus metrics of this NGINX (requests by decision, blocks by cap, cost, Redis round trip, backlog):

curl -s http://127.0.0.1:$admin_port/metrics

Webhooks: spend-cap-relay ($prefix/conf/relay.yaml) delivers every event to a local
receiver, signed with $demo_webhook_secret. Watch them arrive:

tail -f $prefix/logs/webhooks.log

Make an event (limits_changed in org demo) from another terminal; it is printed at once:

curl -s -X PUT http://127.0.0.1:$admin_port/spend-cap/orgs/demo/limits -H "Authorization: Bearer \$(cat $prefix/conf/admin.token)" -H 'Content-Type: application/json' -d '{"daily_usd":"20"}'

The relay's metrics (delivered, failed by status, dead letters, lag):

curl -s http://127.0.0.1:$relay_metrics_port/metrics

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
    local d
    d=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$admin_port/spend-cap/ui/" || true)
    if [ "$a" = 200 ] && [ "$c" = 402 ] && [ "$m" = 200 ] && [ "$d" = 200 ]; then
        say "check: sk-demo-allowed -> $a, sk-demo-capped -> $c, the management API -> $m, the dashboard -> $d"
    else
        say "WARNING: sk-demo-allowed -> $a (want 200), sk-demo-capped -> $c (want 402), the management API -> $m (want 200), the dashboard -> $d (want 200); see $prefix/logs/error.log"
    fi
}

start() {
    [ -x "$nginx_bin" ] || [ "$(id -u)" = 0 ] || die "$nginx_bin not found (run as root to install it)"
    if [ "${SKIP_BUILD:-0}" = 1 ] && [ -f "$module" ]; then
        say "SKIP_BUILD=1: using $module as it is"
        # build.sh builds the module and the relay; SKIP_BUILD=1 without a relay builds both.
        [ -x "$relay_bin" ] || { say "$relay_bin is missing: building it"; "$root/scripts/build.sh"; }
    else
        "$root/scripts/build.sh"
    fi
    [ -f "$module" ] || die "$module was not built"
    [ -x "$relay_bin" ] || die "$relay_bin was not built"
    [ -x "$nginx_bin" ] || die "$nginx_bin not found"
    [ -f "$policy" ] || die "policy file $policy not found"
    install_missing

    mkdir -p "$prefix/logs"
    # Restart cleanly: what a previous run started goes first (Redis stays: it holds
    # the spend counters).
    stop_nginx
    stop_relay
    stop_receiver
    stop_fake
    remove_temp
    if port_open "$port"; then
        if command -v ss >/dev/null; then ss -ltnp "sport = :$port" >&2 || true; fi
        die "127.0.0.1:$port is taken by another program"
    fi
    port_open "$receiver_port" && die "127.0.0.1:$receiver_port is taken; stop what listens there or set RECEIVER_PORT"
    port_open "$relay_metrics_port" && \
        die "127.0.0.1:$relay_metrics_port is taken; stop what listens there or set RELAY_METRICS_PORT"

    start_redis
    [ -n "$upstream" ] || start_fake
    render_conf
    nginx_cmd -t -q || die "nginx -t failed for $prefix/conf/nginx.conf"
    render_relay_conf

    if [ "${FOREGROUND:-0}" = 1 ]; then
        "$nginx_bin" -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/conf/nginx.conf" \
            -g 'daemon off;' &
        local npid=$!
        trap 'kill -QUIT $npid 2>/dev/null; wait $npid 2>/dev/null; stop_relay; stop_receiver; stop_fake; exit 0' INT TERM
        wait_ready || { kill -QUIT "$npid" 2>/dev/null || true; die "nginx did not answer on 127.0.0.1:$port; see $prefix/logs/error.log"; }
        start_receiver
        start_relay
        [ -n "$upstream" ] || smoke_check
        print_usage
        wait "$npid" || true
        stop_relay
        stop_receiver
        stop_fake
    else
        nginx_cmd
        wait_ready || die "nginx did not answer on 127.0.0.1:$port; see $prefix/logs/error.log"
        start_receiver
        start_relay
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
