#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-14 (AddressSanitizer and
# UndefinedBehaviorSanitizer) in build/fuzz and runs each for FUZZ_SECONDS
# (default 30) on a copy of its seed corpus (t/fuzz/corpus/NAME stays clean).
# Fails on any crash, leak, sanitizer report or broken invariant; the
# reproducer is left in build/fuzz/artifacts/.
#   FUZZ_SECONDS=300 t/fuzz/run.sh            # longer
#   build/fuzz/usage_fuzzer build/fuzz/artifacts/usage-crash-...   # replay
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
seconds=${FUZZ_SECONDS:-30}
cxx=${FUZZ_CXX:-clang++-14}
build="$root/build/fuzz"

command -v "$cxx" >/dev/null || { echo "run.sh: $cxx not found (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 1; }

cmake -S "$root" -B "$build" -DSPEND_CAP_FUZZ=ON -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target usage_fuzzer request_fuzzer admin_fuzzer > "$build/build.log" 2>&1 \
    || { tail -40 "$build/build.log"; exit 1; }

mkdir -p "$build/artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for name in usage request admin; do
    mkdir -p "$work/$name"
    cp -R "$root/t/fuzz/corpus/$name/." "$work/$name/"
    echo "==> ${name}_fuzzer for ${seconds}s ($(ls "$work/$name" | wc -l) seeds)"
    if ! "$build/${name}_fuzzer" -max_total_time="$seconds" -max_len=32768 -timeout=20 -rss_limit_mb=2048 \
            -print_final_stats=1 -dict="$root/t/fuzz/$name.dict" -artifact_prefix="$build/artifacts/$name-" "$work/$name" \
            > "$build/$name.log" 2>&1; then
        tail -60 "$build/$name.log"
        echo "run.sh: ${name}_fuzzer failed; reproducer in $build/artifacts/" >&2
        status=1
        continue
    fi
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ +DONE' "$build/$name.log" || true
done
exit "$status"
