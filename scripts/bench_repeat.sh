#!/usr/bin/env bash
# Runs scripts/bench.sh REPEAT times (default 3), back to back, and prints the
# median of each figure of its table, per case and side, with the spread
# (min–max). A shared machine's runs a minute apart can differ by a third: the
# median of a few interleaved runs of both sides is what to compare. Every
# variable bench.sh reads (DURATION, KEYS, ORGS, CONNS, CASES, SIDES, MODULE,
# WORKERS) passes through. Reports; asserts no timings; fails if a run fails.
#
#   REPEAT=5 DURATION=6 scripts/bench_repeat.sh
#   MODULE=/tmp/old.so scripts/bench_repeat.sh     # an older build, the same way
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
repeat=${REPEAT:-3}
python=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for i in $(seq 1 "$repeat"); do
    echo "bench_repeat.sh: run $i of $repeat" >&2
    if ! "$root/scripts/bench.sh" > "$work/run$i.log" 2>&1; then
        tail -30 "$work/run$i.log" >&2
        echo "bench_repeat.sh: run $i failed" >&2
        exit 1
    fi
done

"$python" - "$work" "$repeat" <<'EOF'
import glob, statistics, sys

work, repeat = sys.argv[1], int(sys.argv[2])
columns = ["req/s", "p50 ms", "p99 ms", "worker µs/req", "redis µs/req", "redis cmds/req", "module/plain req/s"]
runs = {}   # (case, side) -> column -> [values]
order = []
title = ""
for path in sorted(glob.glob(work + "/run*.log")):
    lines = open(path, encoding="utf-8").read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("=== table"))
    title = lines[start][len("=== table "):]
    for line in lines[start + 1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 9 or cells[0] in ("case", "") or cells[0].startswith("-"):
            continue
        key = (cells[0], cells[1])
        if key not in runs:
            runs[key] = {c: [] for c in columns}
            order.append(key)
        for name, value in zip(columns, cells[2:]):
            try:
                runs[key][name].append(float(value))
            except ValueError:
                pass

def show(values):
    if not values:
        return "—"
    med = statistics.median(values)
    digits = 3 if med < 10 and med != int(med) else 1
    text = "%.*f" % (digits, med)
    if len(values) > 1:
        text += " (%.*f–%.*f)" % (digits, min(values), digits, max(values))
    return text

print("=== medians of %d runs %s; (min–max) in brackets" % (repeat, title))
print()
print("| case | side | " + " | ".join(columns) + " |")
print("|---|---|" + "---:|" * len(columns))
for key in order:
    print("| %s | %s | " % key + " | ".join(show(runs[key][c]) for c in columns) + " |")
EOF
