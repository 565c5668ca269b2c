#!/usr/bin/env bash
# The single test command (README and CI call it):
#   1. installs the Debian packages the build and the tests need (when root, only missing ones)
#   2. builds the module (scripts/build.sh -> build/ngx_http_spend_cap_module.so)
#   3. builds and runs the core's GoogleTest unit tests (cmake + ctest, build/core),
#      then fuzzes the core for FUZZ_SECONDS per fuzzer (t/fuzz/run.sh, clang-14, build/fuzz)
#   4. installs the SDK test dependencies (npm ci in t/sdk) when needed
#   5. a 3-second smoke of scripts/bench.sh (SMOKE=1: every answer 2xx, counters exact; no timings),
#      with file keys, with keys made through the management API (KEY_SOURCE=api) and on a
#      Redis Cluster of 3 masters (REDIS=cluster),
#      and of scripts/bench_scripts.sh (it builds and runs)
#   6. runs the integration tests (pytest t/integration)
#   7. builds the module with AddressSanitizer and UndefinedBehaviorSanitizer and runs
#      the fault and hardening tests against it once more, failing on any report
#      (SANITIZE_PASS=0 skips this)
# Extra arguments are passed to pytest (and skip step 7), e.g. scripts/test.sh -k block -x
#
# SANITIZE=1 scripts/test.sh [pytest arguments]: only the integration tests (all of
# them, or those named), against the module built with both sanitizers
# (build/sanitize/, SANITIZE=1 scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PACKAGES=(nginx nginx-dev libhiredis-dev libyaml-cpp-dev libjansson-dev redis-server libgtest-dev
          libssl-dev zlib1g-dev libpcre2-dev cmake pkg-config python3-pytest python3-redis python3-httpx python3-jsonschema python3-yaml python3-prometheus-client prometheus libcurl4-openssl-dev
          wrk curl nodejs npm clang-14 libclang-rt-14-dev libfuzzer-14-dev liblua5.1-0-dev
          libhowardhinnant-date-dev tzdata chromium chromium-driver python3-selenium fonts-dejavu-core
          dpkg-dev debhelper lintian)

step() { printf '\n==> %s\n' "$*"; }

step "packages"
installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }
missing=()
for p in "${PACKAGES[@]}"; do
    case "$p" in
        # a nodejs build that bundles npm (e.g. NodeSource's, which "Provides: npm" and
        # conflicts with Debian's npm) counts: only a missing command is installed
        nodejs) command -v node >/dev/null 2>&1 || installed nodejs || missing+=("$p") ;;
        npm)    command -v npm >/dev/null 2>&1 || installed npm || missing+=("$p") ;;
        *)      installed "$p" || missing+=("$p") ;;
    esac
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "missing Debian packages (not root, not installing): ${missing[*]}" >&2
    fi
else
    echo "all present"
fi
# the redis-server package starts a system service on 6379; the tests start their own
# redis-server on free ports and do not need it.

# The fault and hardening tests: the sanitized pass runs these.
SANITIZED_TESTS=(t/integration/test_faults.py t/integration/test_redis_failures.py
                 t/integration/test_stream_faults.py t/integration/test_reach.py
                 t/integration/test_api_hardening.py t/integration/test_property_reservation.py
                 t/integration/test_example_configs.py t/integration/test_identity.py
                 t/integration/test_edge.py t/integration/test_cluster.py
                 t/integration/test_managed_endpoint.py t/integration/test_metrics.py
                 t/integration/test_budget_shapes.py t/integration/test_check_forecast.py
                 t/integration/test_dashboard_serving.py t/integration/test_dashboard.py)

if [[ "${SANITIZE:-0}" == 1 ]]; then
    step "build the module with AddressSanitizer and UndefinedBehaviorSanitizer"
    SANITIZE=1 ./scripts/build.sh
    step "integration tests against the sanitized module (any report fails its test)"
    export SPEND_CAP_SANITIZE=1 SPEND_CAP_MODULE="$ROOT/build/sanitize/ngx_http_spend_cap_module.so"
    if (($#)); then
        exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@"
    fi
    exec /usr/bin/python3 -m pytest -q -p no:cacheprovider t/integration
fi

step "build the module"
./scripts/build.sh

step "core unit tests"
cmake -S . -B build/core -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/core -j"$(nproc)"
(cd build/core && ctest --output-on-failure -j"$(nproc)")

step "core fuzzing (${FUZZ_SECONDS:-30}s per fuzzer)"
FUZZ_SECONDS=${FUZZ_SECONDS:-30} t/fuzz/run.sh

step "SDK test dependencies"
if [[ ! -d t/sdk/node_modules ]] || [[ t/sdk/package-lock.json -nt t/sdk/node_modules/.package-lock.json ]]; then
    (cd t/sdk && npm ci --no-audit --no-fund)
else
    echo "t/sdk/node_modules up to date"
fi

step "bench smoke (3 s)"
SMOKE=1 ./scripts/bench.sh

step "bench smoke with keys made through the management API (3 s, JSON)"
SMOKE=1 KEY_SOURCE=api CASES=json ./scripts/bench.sh

step "bench smoke on a Redis Cluster of 3 masters (3 s, JSON)"
SMOKE=1 REDIS=cluster CASES=json ./scripts/bench.sh

step "script bench smoke (the tool runs; no timings)"
BATCHES="1 5" ROUNDS=3 ./scripts/bench_scripts.sh

step "integration tests"
if (($#)); then
    SPEND_CAP_MODULE="${SPEND_CAP_MODULE:-$ROOT/build/ngx_http_spend_cap_module.so}" \
        exec /usr/bin/python3 -m pytest -q -p no:cacheprovider t/integration "$@"
fi
SPEND_CAP_MODULE="${SPEND_CAP_MODULE:-$ROOT/build/ngx_http_spend_cap_module.so}" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider t/integration

if [[ "${SANITIZE_PASS:-1}" == 1 ]]; then
    SANITIZE=1 ./scripts/test.sh "${SANITIZED_TESTS[@]}"
fi
