#!/usr/bin/env bash
# Fault drills under load, outside the test suite: Redis OOM, a restart that
# loads a dataset (LOADING), a 200 ms Redis, a black-holed Redis, kill -9 of
# the workers, requests outliving their reservation's deadline, absurd
# numbers; on a Redis Cluster (3 masters, 3 replicas), kill -9 of a master
# (failover) and a slot migrated under load (reshard). Prints per drill: sent,
# answered by status, settled, lost, leaked.
#   scripts/drill.sh                  # every drill, 16 clients, 8 s each
#   scripts/drill.sh oom kill9 --clients 32 --seconds 10
#   scripts/drill.sh failover reshard
# Loopback only; each drill starts its own redis-server, fake provider and NGINX.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -n "${SKIP_BUILD:-}" ]] || ./scripts/build.sh
exec /usr/bin/python3 t/drill.py "$@"
