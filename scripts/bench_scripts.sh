#!/usr/bin/env bash
# Redis's own cost of the reserve and settle scripts per batch size, without NGINX:
# t/bench/scripts_bench.cpp against a redis-server of its own on a free 127.0.0.1
# port, batches of BATCHES (default "1 5 15 50") requests of one key, ROUNDS (default
# 200) of each; prints the median EVALSHA µs per call and per request. Reports only.
# Needs the core library (build/core, built by scripts/test.sh or cmake) and hiredis.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
port=""
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
if [[ ! -f "$root/build/core/libspendcap_core.a" ]]; then
    cmake -S "$root" -B "$root/build/core" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$root/build/core" --target spendcap_core -j"$(nproc)" >/dev/null
fi
g++ -O2 -std=c++17 -I"$root/src/core" "$root/t/bench/scripts_bench.cpp" "$root/build/core/libspendcap_core.a" \
    -lhiredis $(pkg-config --libs jansson) -lyaml-cpp -lcrypto -lz -ldate-tz -pthread -o "$work/scripts_bench"
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$work" --logfile "$work/redis.log" >/dev/null
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
# shellcheck disable=SC2086
"$work/scripts_bench" "$port" "${ROUNDS:-200}" ${BATCHES:-1 5 15 50}
