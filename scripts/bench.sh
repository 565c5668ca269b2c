#!/usr/bin/env bash
# What spend-cap costs per request: the same proxy with and without `spend_cap on`,
# measured with wrk against a fast fake upstream. Reports; asserts no timings.
#
#   scripts/bench.sh                 DURATION=10 (seconds per side), WORKERS=1
#
# Starts, on free 127.0.0.1 ports, in a temp dir that it removes at exit:
#   - its own redis-server;
#   - a fake upstream: an NGINX server block answering every request with a fixed
#     OpenAI chat completion (with usage), so the upstream is not the bottleneck;
#   - "plain":  NGINX, proxy_pass to the fake upstream (keepalive 64);
#   - "module": the same plus load_module, spend_cap on, and a policy with generous caps.
# Both fronts run WORKERS worker processes; wrk -t2 -c64 -d${DURATION}s POSTs
# /v1/chat/completions (gpt-4o-mini) with an Authorization header to each in turn.
# Two cases (CASES="json stream" by default), each plain vs module:
#   json:   a plain JSON chat completion (usage at the end of the body);
#   stream: "stream": true (no stream_options: the module injects include_usage) to
#           /v1/sse/chat/completions, answered with a real-shaped SSE stream of ~200
#           chat.completion.chunk events, a final usage chunk and data: [DONE]
#           (text/event-stream, ~50 KB), which the module scans as it passes.
# Needs build/ngx_http_spend_cap_module.so (runs scripts/build.sh if it is missing).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module="$root/build/ngx_http_spend_cap_module.so"
nginx_bin=${NGINX:-/usr/sbin/nginx}
duration=${DURATION:-10}
workers=${WORKERS:-1}
threads=2
conns=64
warmup=2
read -r -a sides <<< "${SIDES:-plain module}"   # SIDES=plain: check the harness alone
read -r -a cases <<< "${CASES:-json stream}"

say() { printf 'bench.sh: %s\n' "$*"; }
die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }

for tool in wrk redis-server redis-cli curl "$nginx_bin"; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install wrk redis-server curl nginx)"
done
has_module=0
[[ " ${sides[*]} " == *" module "* ]] && has_module=1
if [ "$has_module" = 1 ] && [ ! -f "$module" ]; then
    say "$module is missing: running scripts/build.sh"
    "$root/scripts/build.sh"
fi

dir=$(mktemp -d /tmp/spend-cap-bench.XXXXXX)
chmod 755 "$dir"   # NGINX workers run as nobody when we are root
redis_pid=""
cleanup() {
    local p
    for p in upstream plain module; do
        if [ -f "$dir/$p/nginx.pid" ]; then
            "$nginx_bin" -p "$dir/$p" -c "$dir/$p/nginx.conf" -e "$dir/$p/error.log" -s stop 2>/dev/null || true
        fi
    done
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; fi
    sleep 0.3
    rm -rf -- "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
used_ports=" "
redis_port="" up_port="" plain_port="" module_port=""
# Sets redis_port, up_port, plain_port, module_port to distinct free ports.
pick_ports() {
    local n
    for n in redis_port up_port plain_port module_port; do
        local p
        while :; do
            p=$((20000 + RANDOM % 30000))
            [[ "$used_ports" == *" $p "* ]] && continue
            port_open "$p" && continue
            break
        done
        used_ports+="$p "
        printf -v "$n" '%s' "$p"
    done
}
pick_ports

# --- Redis -----------------------------------------------------------------------
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --daemonize no --logfile "$dir/redis.log" &
redis_pid=$!
for _ in $(seq 1 50); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done
redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG || die "redis-server did not start"

# --- Policy: one key with generous caps ------------------------------------------
bench_secret="sk-bench-$$"
bench_sha=$(printf %s "$bench_secret" | sha256sum | cut -d' ' -f1)
# the streaming case counts under its own key
sse_secret="sk-bench-sse-$$"
sse_sha=$(printf %s "$sse_secret" | sha256sum | cut -d' ' -f1)
cat > "$dir/policy.yaml" <<EOF
models:
  gpt-4o-mini: { input: 0.15, output: 0.60, cached_input: 0.075, max_output_tokens: 16384 }
unknown_model: reject
default_max_output_tokens: 4096
orgs:
  bench: { limits: { daily_usd: 1000000 } }
projects:
  bench-prod: { org: bench, limits: { monthly_usd: 1000000 } }
keys:
  - id: key_bench
    sha256: $bench_sha
    project: bench-prod
    limits: { daily_usd: 1000000, monthly_usd: 1000000, lifetime_usd: 1000000 }
  - id: key_bench_sse
    sha256: $sse_sha
    project: bench-prod
    limits: { daily_usd: 1000000, monthly_usd: 1000000, lifetime_usd: 1000000 }
EOF

# --- NGINX configs ---------------------------------------------------------------
# A real-shaped OpenAI chat completion: 12 prompt + 9 completion tokens.
completion='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_bench"}'
per_request_nanousd=$((12 * 150 + 9 * 600))   # ceil((12*0.15e9 + 9*0.60e9) / 1e6)

# A real-shaped OpenAI chat completion stream: a role chunk, 200 content chunks, a finish
# chunk, the usage chunk (12 prompt + 200 completion tokens) and [DONE].
sse_events=200
sse_per_request_nanousd=$((12 * 150 + sse_events * 600))
mkdir -p "$dir/upstream/html/v1/sse"
{
    chunk='{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_bench","choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}],"usage":null}'
    printf "data: $chunk\n\n" '{"role":"assistant","content":"","refusal":null}' null
    for i in $(seq 1 "$sse_events"); do
        printf "data: $chunk\n\n" "{\"content\":\" word$i\"}" null
    done
    printf "data: $chunk\n\n" '{}' '"stop"'
    printf 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_bench","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}\n\n' \
        "$sse_events" $((12 + sse_events))
    printf 'data: [DONE]\n\n'
} > "$dir/upstream/html/v1/sse/stream.sse"

common() { # $1 = prefix
    cat <<EOF
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
temp_paths() { # $1 = prefix
    cat <<EOF
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

mkdir -p "$dir/upstream" "$dir/plain" "$dir/module"
{
    echo "worker_processes ${UPSTREAM_WORKERS:-$workers};"
    common "$dir/upstream"
    echo "http {"
    temp_paths "$dir/upstream"
    cat <<EOF
    access_log off;
    server {
        listen 127.0.0.1:$up_port backlog=4096;
        keepalive_requests 1000000;
        location / {
            default_type application/json;
            return 200 '$completion';
        }
        # the streaming case: a fixed SSE body from a file (POST to a static file is a 405,
        # which error_page turns into a GET of the same file)
        location /v1/sse/ {
            root $dir/upstream/html;
            types { }
            default_type text/event-stream;
            rewrite ^ /v1/sse/stream.sse break;
            error_page 405 =200 /v1/sse/stream.sse;
        }
    }
}
EOF
} > "$dir/upstream/nginx.conf"

front() { # $1 = prefix, $2 = port, $3 = with module (0/1)
    [ "$3" = 1 ] && echo "load_module $module;"
    echo "worker_processes $workers;"
    common "$1"
    echo "http {"
    temp_paths "$1"
    if [ "$3" = 1 ]; then
        echo "    spend_cap_redis 127.0.0.1:$redis_port;"
        echo "    spend_cap_policy $dir/policy.yaml;"
    fi
    cat <<EOF
    access_log off;
    upstream fake {
        server 127.0.0.1:$up_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        keepalive_requests 1000000;
        location /v1/ {
$([ "$3" = 1 ] && echo "            spend_cap on;")
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}
front "$dir/plain" "$plain_port" 0 > "$dir/plain/nginx.conf"
front "$dir/module" "$module_port" 1 > "$dir/module/nginx.conf"

start_nginx() { # $1 = name, $2 = port
    local p="$dir/$1"
    "$nginx_bin" -p "$p" -c "$p/nginx.conf" -e "$p/error.log" -t -q \
        || die "nginx -t failed for the $1 server ($p/nginx.conf)"
    "$nginx_bin" -p "$p" -c "$p/nginx.conf" -e "$p/error.log"
    for _ in $(seq 1 50); do
        port_open "$2" && return 0
        sleep 0.1
    done
    die "the $1 server did not start: $(tail -5 "$p/error.log")"
}
start_nginx upstream "$up_port"
for side in "${sides[@]}"; do
    port_var="${side}_port"
    start_nginx "$side" "${!port_var}"
done

# Worker RSS in KiB, summed over the workers of server $1.
worker_rss() {
    local master
    master=$(cat "$dir/$1/nginx.pid")
    ps -o rss= --ppid "$master" | awk '{s += $1; n++} END {printf "%d KiB (%d workers)", s, n}'
}
# CPU seconds used so far by the workers of server $1 / by process $1.
worker_cpu() { ps -o times= --ppid "$(cat "$dir/$1/nginx.pid")" | awk '{s += $1} END {print s + 0}'; }
proc_cpu() { ps -o times= -p "$1" | awk '{print $1 + 0}'; }

# --- Sanity: one request through each front --------------------------------------
body='{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
for side in "${sides[@]}"; do
    port_var="${side}_port"
    code=$(curl -s -o "$dir/$side.sanity" -w '%{http_code}' --max-time 5 \
        "http://127.0.0.1:${!port_var}/v1/chat/completions" \
        -H "Authorization: Bearer $bench_secret" -H 'Content-Type: application/json' -d "$body" || true)
    [ "$code" = 200 ] || die "$side: a single request answered $code, not 200: $(cat "$dir/$side.sanity" 2>/dev/null); $(tail -5 "$dir/$side/error.log")"
done

sse_body='{"model":"gpt-4o-mini","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Count to two hundred."}]}'
if [[ " ${cases[*]} " == *" stream "* ]]; then
    for side in "${sides[@]}"; do
        port_var="${side}_port"
        code=$(curl -s -o "$dir/$side.sse.sanity" -w '%{http_code}' --max-time 5 \
            "http://127.0.0.1:${!port_var}/v1/sse/chat/completions" \
            -H "Authorization: Bearer $sse_secret" -H 'Content-Type: application/json' -d "$sse_body" || true)
        [ "$code" = 200 ] && tail -c 14 "$dir/$side.sse.sanity" | grep -q 'data: \[DONE\]' \
            || die "$side: a single streaming request answered $code, not a 200 stream ending in [DONE]: $(head -c 300 "$dir/$side.sse.sanity" 2>/dev/null); $(tail -5 "$dir/$side/error.log")"
    done
fi

# --- wrk -----------------------------------------------------------------------
write_lua() { # $1 = file, $2 = path, $3 = secret, $4 = body
    cat > "$1" <<EOF
wrk.method = "POST"
wrk.path = "$2"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $3"
wrk.body = '$4'

done = function(summary, latency, requests)
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout))
end
EOF
}
write_lua "$dir/post.lua" /v1/chat/completions "$bench_secret" "$body"
write_lua "$dir/sse.lua" /v1/sse/chat/completions "$sse_secret" "$sse_body"

# Keys: "$side" for the json case (as before), "$side:stream" for the streaming one.
declare -A rss_before rss_after result cpu_front cpu_up cpu_redis

run_case() { # $1 = case (json|stream)
    local c=$1 lua suffix side port_var url f0 u0 r0
    if [ "$c" = json ]; then lua="$dir/post.lua"; suffix=""; else lua="$dir/sse.lua"; suffix=":$c"; fi
    for side in "${sides[@]}"; do
        rss_before[$side$suffix]=$(worker_rss "$side")
    done
    if [ "$c" = json ]; then
        say "wrk -t$threads -c$conns -d${duration}s, $workers worker(s) per front, ${warmup}s warm-up each"
    else
        echo
        say "streaming case: wrk -t$threads -c$conns -d${duration}s POST /v1/sse/chat/completions, $((sse_events + 4))-event SSE answers"
    fi
    for side in "${sides[@]}"; do
        port_var="${side}_port"
        url="http://127.0.0.1:${!port_var}"
        wrk -t"$threads" -c"$conns" -d"${warmup}s" -s "$lua" "$url" > /dev/null
        echo
        echo "=== $side${suffix:+ ($c)}: $url"
        f0=$(worker_cpu "$side"); u0=$(worker_cpu upstream); r0=$(proc_cpu "$redis_pid")
        wrk -t"$threads" -c"$conns" -d"${duration}s" --latency -s "$lua" "$url" | tee "$dir/$side$suffix.wrk"
        cpu_front[$side$suffix]=$(( $(worker_cpu "$side") - f0 ))
        cpu_up[$side$suffix]=$(( $(worker_cpu upstream) - u0 ))
        cpu_redis[$side$suffix]=$(( $(proc_cpu "$redis_pid") - r0 ))
        result[$side$suffix]=$(grep '^RESULT ' "$dir/$side$suffix.wrk" | tail -1)
        rss_after[$side$suffix]=$(worker_rss "$side")
    done
}

field() { # $1 = RESULT line, $2 = name
    tr ' ' '\n' <<< "$1" | awk -F= -v k="$2" '$1 == k {print $2}'
}

bad=0
summary() { # $1 = case
    local c=$1 suffix="" side r errs non2xx
    [ "$c" = json ] || suffix=":$c"
    echo
    if [ "$c" = json ]; then
        echo "=== summary (wrk -t$threads -c$conns -d${duration}s, $workers worker(s) per front, $(nproc) CPUs)"
    else
        echo "=== summary, streaming: $((sse_events + 4))-event SSE answers (wrk -t$threads -c$conns -d${duration}s, $workers worker(s) per front, $(nproc) CPUs)"
    fi
    printf '%-7s %12s %10s %10s %10s %8s %8s   %-24s %-24s %s\n' side 'requests/s' 'p50 ms' 'p90 ms' 'p99 ms' non2xx errors 'worker RSS before' 'worker RSS after' 'CPU s: front/upstream/redis'
    for side in "${sides[@]}"; do
        r=${result[$side$suffix]}
        errs=$(( $(field "$r" connect_err) + $(field "$r" read_err) + $(field "$r" write_err) + $(field "$r" timeouts) ))
        non2xx=$(field "$r" non2xx)
        [ "$non2xx" = 0 ] || bad=1
        printf '%-7s %12s %10.2f %10.2f %10.2f %8s %8s   %-24s %-24s %s\n' "$side" "$(field "$r" rps)" \
            "$(awk -v x="$(field "$r" p50_us)" 'BEGIN {print x / 1000}')" \
            "$(awk -v x="$(field "$r" p90_us)" 'BEGIN {print x / 1000}')" \
            "$(awk -v x="$(field "$r" p99_us)" 'BEGIN {print x / 1000}')" \
            "$non2xx" "$errs" "${rss_before[$side$suffix]}" "${rss_after[$side$suffix]}" \
            "${cpu_front[$side$suffix]}/${cpu_up[$side$suffix]}/${cpu_redis[$side$suffix]}"
    done
    if [ "$has_module" = 1 ] && [[ " ${sides[*]} " == *" plain "* ]]; then
        awk -v m="$(field "${result[module$suffix]}" rps)" -v p="$(field "${result[plain$suffix]}" rps)" -v l="${suffix:+ ($c)}" \
            'BEGIN {printf "module/plain requests/s%s: %.3f\n", l, (p > 0 ? m / p : 0)}'
    fi

    # What the module counted for the case's key today, against the fake upstream's usage.
    if [ "$has_module" = 1 ]; then
        local key=key_bench per=$per_request_nanousd what="12 prompt + 9 completion tokens = 7200 nano-USD a request"
        if [ "$c" != json ]; then
            key=key_bench_sse per=$sse_per_request_nanousd
            what="12 prompt + $sse_events completion tokens in the final chunk = $sse_per_request_nanousd nano-USD a request"
        fi
        sleep 0.5
        local today spent counted
        today=$(date -u +%F)
        spent=$(redis-cli -p "$redis_port" get "sc:{bench}:spend:key:$key:d:$today" 2>/dev/null || true)
        counted=$(redis-cli -p "$redis_port" get "sc:{bench}:reqs:key:$key:d:$today" 2>/dev/null || true)
        [ "$c" = json ] || echo "($what; the requests wrk leaves in flight when it stops are client aborts, settled at their reservation)"
        echo "redis: requests counted ${counted:-<none>} (wrk's measured run: $(field "${result[module$suffix]}" requests), plus warm-up and one sanity request);" \
             "spend ${spent:-<none>} nano-USD = $(awk -v s="${spent:-0}" -v n="${counted:-0}" 'BEGIN {printf "%.1f", (n > 0 ? s / n : 0)}')" \
             "a request (usage says $per)"
        [ "$c" = json ] && echo "redis: $(redis-cli -p "$redis_port" dbsize) keys, $(redis-cli -p "$redis_port" info memory | grep -m1 '^used_memory_human:' | cut -d: -f2 | tr -d '\r') used"
    fi
    return 0
}

for c in "${cases[@]}"; do
    case "$c" in json|stream) run_case "$c" ;; *) die "unknown case $c (CASES=\"json stream\")" ;; esac
done
for c in "${cases[@]}"; do
    summary "$c"
done
if grep -q '\[alert\]\|\[emerg\]\|\[crit\]' "$dir"/*/error.log; then
    echo "error logs have alert/crit/emerg lines:"
    grep -h '\[alert\]\|\[emerg\]\|\[crit\]' "$dir"/*/error.log | head -20
    bad=1
fi
if [ "$bad" = 1 ]; then
    say "WARNING: non-2xx answers or critical log lines: the comparison above is not like for like"
    exit 1
fi
