#!/usr/bin/env bash
# What spend-cap costs per request: the same proxy with and without `spend_cap on`,
# measured with wrk against a fast fake upstream. Reports; asserts no timings.
#
#   scripts/bench.sh                 DURATION=10 (seconds per side), WORKERS=1, KEYS=1
#   KEYS=10000 scripts/bench.sh      every request uses one of 10,000 keys, at random
#   CONNS=1 scripts/bench.sh         one connection (latency without concurrency; default 64)
#   MODULE=path scripts/bench.sh     the module to load (default build/ngx_http_spend_cap_module.so)
#   SMOKE=1 scripts/bench.sh         CI: 3 s per side, and the counters must be exact
#   KEY_SOURCE=api scripts/bench.sh  the keys are created through the management API
#                                    (records in Redis) instead of listed in the file
#   STATUS=0 scripts/bench.sh        no spend_cap_status location on the module front (to
#                                    measure a module from before it had one)
#   MODEL_LIMIT=1 scripts/bench.sh   every key also has a per-model limit on its model
#                                    (models: {"gpt-4o*": {daily_usd: 1000000}}, SPEC 2b)
#   REDIS=cluster scripts/bench.sh   a Redis Cluster of 3 masters (no replicas) instead of
#                                    one redis-server (REDIS=standalone, the default)
#
# Starts, on free 127.0.0.1 ports, in a temp dir that it removes at exit:
#   - its own redis-server; REDIS=cluster: 3 (each its own cluster bus port), made a
#     cluster with redis-cli --cluster create, and the module front names all 3 as
#     seeds in spend_cap_redis_cluster (every key of an org carries the hash tag {ORG},
#     so an org's keys sit on one master);
#   - a fake upstream: an NGINX server block answering every request with a fixed
#     OpenAI chat completion (with usage), so the upstream is not the bottleneck;
#   - "plain":  NGINX, proxy_pass to the fake upstream (keepalive 64);
#   - "module": the same plus load_module (of a private copy of
#     build/ngx_http_spend_cap_module.so, made at start: a rebuild in place cannot
#     touch the running workers), spend_cap on, and a policy with generous caps.
# Both fronts run WORKERS worker processes; wrk -t2 -c${CONNS:-64} -d${DURATION}s (one thread for CONNS=1) POSTs
# /v1/chat/completions (gpt-4o-mini) with an Authorization header to each in turn,
# after a WARMUP-second (default 2) warm-up.
# Two cases (CASES="json stream" by default), each plain vs module:
#   json:   a plain JSON chat completion (usage at the end of the body);
#   stream: "stream": true (no stream_options: the module injects include_usage) to
#           /v1/sse/chat/completions, answered with a real-shaped SSE stream of ~200
#           chat.completion.chunk events, a final usage chunk and data: [DONE]
#           (text/event-stream, ~50 KB), which the module scans as it passes; both fronts
#           proxy it with `proxy_buffering off`, as a streaming gateway does.
# Keys (KEYS=N, ORGS=M): each case has its own set of N keys, secrets sk-bench-<i>
# (json) and sk-bench-sse-<i> (stream), i = 0..N-1; key i belongs to org bench<i mod M>
# (each org one project, bench<j>-prod), with generous caps at key, project and org
# level. KEYS=1 (default): one key per case, key_bench / key_bench_sse in org bench.
# ORGS defaults to one org per 100 keys, at most 100. With KEYS > 1 every request picks
# one of its case's keys at random (uniformly; requests preformatted per key with
# wrk.format in init(), picked in request()).
# KEY_SOURCE=api: the file holds the orgs and projects but no key; the module front
# also serves the management API (its own port, a token in the temp dir), and before
# the runs every key is created with POST /keys (same ids and caps), its secret kept
# for wrk. Both fronts then see the same traffic; compare with a KEY_SOURCE=file run.
#
# Per side and case it prints requests/s, p50/p90/p99 latency, worker RSS before and
# after, and, over wrk's measured run (the warm-up's settlements landed before it):
#   worker µs/req   utime+stime of the front's worker processes (/proc/PID/stat) / requests
#   redis µs/req    INFO cpu used_cpu_sys+used_cpu_user / requests
#   redis cmds/req  INFO commandstats calls (commands run inside scripts count too; the
#                   harness's own INFO does not) / requests, the 5 biggest by name, and
#                   EVALSHA's usec / requests
#                   (REDIS=cluster: each summed over the 3 masters; the key count too)
# then the module/plain ratio of requests/s and the module − plain worker µs/req, and
# at the end a markdown table of it all.
#
# SMOKE=1 (scripts/test.sh runs it): defaults DURATION=3 WARMUP=1 KEYS=100 ORGS=4, both
# cases, both sides; the module front also writes an access log (key id and
# $spend_cap_cost_usd), so its figures are not comparable to a normal run. After the
# runs and once every settlement has landed (no reservation held), it checks, with
# integer nano-USD: the logged costs sum to the keys' lifetime spend counters (and to
# the projects' and the orgs'), per key and in total; the log lines with a cost number
# the keys' daily request counters; each request settled from usage cost exactly what
# the fake upstream's usage says. Any difference fails the run.
#
# Exits non-zero if any answer was not 2xx, an error log has alert/crit/emerg lines,
# or (SMOKE) a counter is not exact. Never on a timing.
# Needs wrk, redis-server, redis-cli, curl, nginx, /usr/bin/python3 (PYTHON=...), and
# build/ngx_http_spend_cap_module.so (runs scripts/build.sh if it is missing).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
module_built="${MODULE:-$root/build/ngx_http_spend_cap_module.so}"   # MODULE=path: another build (e.g. an older commit)
nginx_bin=${NGINX:-/usr/sbin/nginx}
python=${PYTHON:-/usr/bin/python3}
smoke=${SMOKE:-0}
status=${STATUS:-1}
[ "$smoke" = 0 ] && smoke=""
if [ -n "$smoke" ]; then
    duration=${DURATION:-3}
    warmup=${WARMUP:-1}
    nkeys=${KEYS:-100}
    norgs=${ORGS:-4}
else
    duration=${DURATION:-10}
    warmup=${WARMUP:-2}
    nkeys=${KEYS:-1}
    norgs=${ORGS:-}
fi
workers=${WORKERS:-1}
conns=${CONNS:-64}
threads=$(( conns < 2 ? 1 : 2 ))
read -r -a sides <<< "${SIDES:-plain module}"   # SIDES=plain: check the harness alone
read -r -a cases <<< "${CASES:-json stream}"
redis_mode=${REDIS:-standalone}

say() { printf 'bench.sh: %s\n' "$*"; }
die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }

[[ "$nkeys" =~ ^[1-9][0-9]*$ ]] || die "KEYS=$nkeys: a positive number"
[[ "$redis_mode" =~ ^(standalone|cluster)$ ]] || die "REDIS=$redis_mode: standalone or cluster"
if [ -z "$norgs" ]; then
    norgs=$(( (nkeys + 99) / 100 ))
    [ "$norgs" -le 100 ] || norgs=100
fi
[[ "$norgs" =~ ^[1-9][0-9]*$ ]] && [ "$norgs" -le "$nkeys" ] || die "ORGS=$norgs: a number from 1 to KEYS"
[ "$nkeys" = 1 ] && norgs=1

for tool in wrk redis-server redis-cli curl "$nginx_bin" "$python"; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install wrk redis-server curl nginx python3)"
done
has_module=0
[[ " ${sides[*]} " == *" module "* ]] && has_module=1
[ -z "$smoke" ] || [ "$has_module" = 1 ] || die "SMOKE=1 checks the module's counters: SIDES must include module"
if [ "$has_module" = 1 ] && [ ! -f "$module_built" ]; then
    say "$module_built is missing: running scripts/build.sh"
    "$root/scripts/build.sh"
fi

dir=$(mktemp -d /tmp/spend-cap-bench.XXXXXX)
chmod 755 "$dir"   # NGINX workers run as nobody when we are root
redis_pids=""   # every redis-server started (3 for REDIS=cluster)
cleanup() {
    local p
    for p in upstream plain module; do
        if [ -f "$dir/$p/nginx.pid" ]; then
            "$nginx_bin" -p "$dir/$p" -c "$dir/$p/nginx.conf" -e "$dir/$p/error.log" -s stop 2>/dev/null || true
        fi
    done
    if [ -n "$redis_pids" ]; then kill $redis_pids 2>/dev/null || true; fi
    sleep 0.3
    rm -rf -- "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
started=$SECONDS

# The module NGINX loads: a private copy (build.sh replaces the file by rename, so the
# copy is always one whole build).
module="$dir/ngx_http_spend_cap_module.so"
if [ "$has_module" = 1 ]; then
    cp "$module_built" "$module"
    say "module: $(stat -c '%y' "$module_built" | cut -d. -f1) build, copied to $module"
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
used_ports=" "
redis_port="" up_port="" plain_port="" module_port="" admin_port=""
# Sets each variable named in $@ to a distinct free port, below Linux's ephemeral range
# (32768-60999): a port an outgoing connection holds cannot be bound, and is not open.
pick_ports() {
    local n p
    for n in "$@"; do
        while :; do
            p=$((20000 + RANDOM % 12000))
            [[ "$used_ports" == *" $p "* ]] && continue
            port_open "$p" && continue
            break
        done
        used_ports+="$p "
        printf -v "$n" '%s' "$p"
    done
}
pick_ports redis_port up_port plain_port module_port admin_port
# The masters' ports, space-separated: the helper reads and sums over all of them.
redis_ports=$redis_port
if [ "$redis_mode" = cluster ]; then
    pick_ports redis_port_2 redis_port_3 bus_port_1 bus_port_2 bus_port_3
    redis_ports="$redis_port $redis_port_2 $redis_port_3"
fi

# --- The helper: policy, Redis figures, the smoke check (integers for money) -------
cat > "$dir/bench.py" <<'PY'
import hashlib, os, socket, sys, time

class Redis:
    """Just enough RESP for the harness, with exact integers."""
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", int(port)))
        self.file = self.sock.makefile("rb")

    def pipe(self, commands):
        out = bytearray()
        for c in commands:
            out += b"*%d\r\n" % len(c)
            for a in c:
                a = str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(bytes(out))
        return [self.read() for _ in commands]

    def cmd(self, *args):
        return self.pipe([args])[0]

    def read(self):
        line = self.file.readline()
        if not line:
            raise EOFError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

    def scan(self, pattern):
        cursor = "0"
        while True:
            cursor, keys = self.cmd("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            yield from keys
            if cursor == "0":
                return

    def get_many(self, keys):
        values = []
        for i in range(0, len(keys), 1000):
            values += self.pipe([("GET", k) for k in keys[i:i + 1000]])
        return [int(v) if v is not None else 0 for v in values]


def key_slot(key):
    """Redis Cluster's slot of a key: CRC16 (XMODEM) of its {hash tag}, or of the whole
    key if it has none, mod 16384."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start >= 0 and end > start + 1:
        key = key[start + 1:end]
    crc = 0
    for byte in key.encode():
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc % 16384


class Masters:
    """The Redis the module uses, as one: a redis-server, or (several ports) a cluster's
    masters: each key read on the master of its slot (CLUSTER SLOTS), SCAN on every one."""
    def __init__(self, ports):
        self.nodes = {int(p): Redis(p) for p in ports.split()}
        first = next(iter(self.nodes.values()))
        self.owner = [first] * 16384
        if len(self.nodes) > 1:
            for start, end, master, *_ in first.cmd("CLUSTER", "SLOTS"):
                self.owner[start:end + 1] = [self.nodes[int(master[1])]] * (end + 1 - start)

    def scan(self, pattern):
        for r in self.nodes.values():
            yield from r.scan(pattern)

    def cmd(self, *args):
        """A command on one key, args[1]."""
        return self.owner[key_slot(args[1])].cmd(*args)

    def get_many(self, keys):
        by_node = {}
        for i, k in enumerate(keys):
            by_node.setdefault(self.owner[key_slot(k)], []).append(i)
        values = [0] * len(keys)
        for r, indexes in by_node.items():
            for i, v in zip(indexes, r.get_many([keys[i] for i in indexes])):
                values[i] = v
        return values


def key_set(case, n, orgs):
    """(secret, key id, org) of each key of a case."""
    out = []
    for i in range(n):
        secret = ("sk-bench-sse-%d" if case == "stream" else "sk-bench-%d") % i
        if n == 1:
            out.append((secret, "key_bench_sse" if case == "stream" else "key_bench", "bench"))
        else:
            out.append((secret, ("key_bench_sse_%d" if case == "stream" else "key_bench_%d") % i,
                        "bench%d" % (i % orgs)))
    return out


def policy(n, orgs, out_dir, with_keys=True):
    org_names = ["bench"] if n == 1 else ["bench%d" % j for j in range(orgs)]
    lines = ["models:",
             "  gpt-4o-mini: { input: 0.15, output: 0.60, cached_input: 0.075, max_output_tokens: 16384 }",
             "unknown_model: reject",
             "default_max_output_tokens: 4096",
             "orgs:"]
    lines += ["  %s: { limits: { daily_usd: 1000000 } }" % o for o in org_names]
    lines.append("projects:")
    lines += ["  %s-prod: { org: %s, limits: { monthly_usd: 1000000 } }" % (o, o) for o in org_names]
    lines.append("keys:")
    for case in ("json", "stream"):
        with open("%s/keys.%s" % (out_dir, case), "w") as f:
            for secret, kid, org in key_set(case, n, orgs):
                sha = hashlib.sha256(secret.encode()).hexdigest()
                if with_keys:
                    per_model = (', models: { "gpt-4o*": { daily_usd: 1000000 } }'
                                 if os.environ.get("MODEL_LIMIT") == "1" else "")
                    lines.append("  - { id: %s, sha256: %s, project: %s-prod, limits: { daily_usd: 1000000, "
                                 "monthly_usd: 1000000, lifetime_usd: 1000000%s } }" % (kid, sha, org, per_model))
                f.write("%s %s\n" % (org, kid))
    if not with_keys:
        lines[-1] = "keys: []"
    with open("%s/policy.yaml" % out_dir, "w") as f:
        f.write("\n".join(lines) + "\n")


def api_keys(admin_port, token_file, n, orgs, out_dir):
    """Creates every key of both cases through the management API (the same ids and
    caps as the file would list); writes each case's secrets, in key order."""
    import json
    import urllib.request
    token = open(token_file).read().strip()
    for case in ("json", "stream"):
        with open("%s/secrets.%s" % (out_dir, case), "w") as f:
            for _, kid, org in key_set(case, n, orgs):
                body = json.dumps({"project": "%s-prod" % org, "id": kid,
                                   "limits": {"daily_usd": "1000000", "monthly_usd": "1000000",
                                              "lifetime_usd": "1000000"}}).encode()
                req = urllib.request.Request("http://127.0.0.1:%s/spend-cap/keys" % admin_port, data=body,
                                             headers={"Authorization": "Bearer " + token,
                                                      "Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as answer:
                    if answer.status != 201:
                        sys.exit("POST /keys %s answered %d" % (kid, answer.status))
                    f.write(json.loads(answer.read())["secret"] + "\n")


def counted(ports, key_list, day):
    """Requests and spend the keys of key_list counted on day."""
    pairs = [line.split() for line in open(key_list)]
    r = Masters(ports)
    reqs = r.get_many(["sc:{%s}:reqs:key:%s:d:%s" % (o, k, day) for o, k in pairs])
    spend = r.get_many(["sc:{%s}:spend:key:%s:d:%s" % (o, k, day) for o, k in pairs])
    print(sum(reqs), sum(spend))


def held(r):
    """How many requests' reservations are held (fields of every sc:{ORG}:reserved but
    the batches' "@" and "#" ones)."""
    n = 0
    for key in r.scan("sc:{*}:reserved"):
        n += sum(1 for f in r.cmd("HKEYS", key) if not f.startswith(("@", "#")))
    return n


def quiet(ports, timeout):
    """Waits until no reservation is held; prints how many are left and after how long."""
    r = Masters(ports)
    t0 = time.monotonic()
    while True:
        left = held(r)
        waited = time.monotonic() - t0
        if left == 0 or waited >= float(timeout):
            print(left, "%.1f" % waited)
            return 0 if left == 0 else 1
        time.sleep(0.1)


def fixed(text, digits):
    """'12.0345' -> 12034500 for digits=6: exact, no floats."""
    text = text.strip()
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > digits:
        raise ValueError("not a decimal with at most %d digits: %r" % (digits, text))
    value = int(whole) * 10 ** digits + int((frac + "0" * digits)[:digits])
    return -value if negative else value


def info(path):
    """CPU µs, calls and usec by command, summed over the INFOs in path (one a master)."""
    cpu_us, calls, usec = 0, {}, {}
    for line in open(path):
        line = line.strip()
        if line.startswith("cmdstat_"):
            name, _, stats = line[len("cmdstat_"):].partition(":")
            kv = dict(s.split("=", 1) for s in stats.split(","))
            calls[name] = calls.get(name, 0) + int(kv["calls"])
            usec[name] = usec.get(name, 0) + int(kv["usec"])
        elif line.startswith(("used_cpu_sys:", "used_cpu_user:")):
            cpu_us += fixed(line.partition(":")[2], 6)
    return cpu_us, calls, usec


def redis_delta(before, after, requests):
    """Redis's CPU and commands between two INFO cpu commandstats snapshots, per request.
    The harness's own INFO calls are left out."""
    requests = int(requests)
    cpu0, calls0, usec0 = info(before)
    cpu1, calls1, usec1 = info(after)
    delta = {n: c - calls0.get(n, 0) for n, c in calls1.items() if n != "info"}
    delta = {n: c for n, c in delta.items() if c > 0}
    per = lambda x: x / requests if requests > 0 else 0.0
    top = sorted(delta.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    evalsha_usec = usec1.get("evalsha", 0) - usec0.get("evalsha", 0)
    print("cpu_s=%.2f redis_us_req=%.1f cmds_req=%.2f evalsha_us_req=%.1f top=%s" % (
        (cpu1 - cpu0) / 1e6, per(cpu1 - cpu0), per(sum(delta.values())), per(evalsha_usec),
        ",".join("%s:%.2f" % (n, per(c)) for n, c in top) or "-"))


def metrics(port):
    """spend_cap_status of the module front: {sample line's name and labels: value}."""
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = int(value) if value.isdigit() else value
    return out


def check(ports, log, json_cost, sse_cost, metrics_port):
    """SMOKE: the access log's costs against the counters, exactly; and against the
    module's own metrics."""
    expected = {"json": int(json_cost), "stream": int(sse_cost)}
    failures = []
    lines = with_cost = 0
    cost = {}            # key id -> nano-USD logged
    n_cost = {}          # key id -> log lines with a cost
    by_case = {"json": [0, 0], "stream": [0, 0]}          # lines with a cost, nano-USD
    settled = {}         # settled_from -> count
    statuses = {}
    wrong_usage = 0
    for line in open(log):
        parts = line.split()
        if len(parts) != 5:
            failures.append("an access log line is not 5 fields: %r" % line)
            continue
        kid, usd, source, status, uri = parts
        lines += 1
        statuses[status] = statuses.get(status, 0) + 1
        if not (status.startswith("2") or status == "499"):
            failures.append("a request answered %s: %r" % (status, line.strip()))
        if usd == "-":
            continue
        nanos = fixed(usd, 9)
        case = "stream" if uri.startswith("/v1/sse/") else "json"
        with_cost += 1
        cost[kid] = cost.get(kid, 0) + nanos
        n_cost[kid] = n_cost.get(kid, 0) + 1
        by_case[case][0] += 1
        by_case[case][1] += nanos
        settled[source] = settled.get(source, 0) + 1
        if source == "usage" and nanos != expected[case]:
            wrong_usage += 1
    logged_total = sum(cost.values())

    r = Masters(ports)
    left = held(r)

    def counters(pattern, scope, tail):
        keys = list(r.scan(pattern))
        values = r.get_many(keys)
        per_id = {}
        for k, v in zip(keys, values):
            ident = k.split(":%s:" % scope, 1)[1]
            ident = ident[:ident.index(tail)] if tail in ident else ident
            per_id[ident] = per_id.get(ident, 0) + v
        return per_id

    life = counters("sc:{*}:spend:key:*:life", "spend:key", ":life")
    reqs = counters("sc:{*}:reqs:key:*:d:*", "reqs:key", ":d:")       # every day: a run over midnight too
    project_life = sum(counters("sc:{*}:spend:project:*:life", "spend:project", ":life").values())
    org_life = sum(counters("sc:{*}:spend:org:*:life", "spend:org", ":life").values())
    life_total, reqs_total = sum(life.values()), sum(reqs.values())
    ids = set(cost) | set(life) | set(reqs)
    key_cost_diff = sorted(k for k in ids if cost.get(k, 0) != life.get(k, 0))
    key_reqs_diff = sorted(k for k in ids if n_cost.get(k, 0) != reqs.get(k, 0))

    print("smoke check (module front; every request of the run, sanity and warm-up included):")
    print("  access log: %d lines (status %s), %d with a cost: json %d = %d nano-USD, stream %d = %d nano-USD;"
          % (lines, ", ".join("%s: %d" % kv for kv in sorted(statuses.items())), with_cost,
             by_case["json"][0], by_case["json"][1], by_case["stream"][0], by_case["stream"][1]))
    print("              settled from %s"
          % (", ".join("%s: %d" % kv for kv in sorted(settled.items())) or "-"))
    print("  logged costs         %15d nano-USD" % logged_total)
    print("  keys' lifetime spend %15d nano-USD (%d keys); projects' %d, orgs' %d"
          % (life_total, len(life), project_life, org_life))
    print("  lines with a cost    %15d" % with_cost)
    print("  keys' daily requests %15d" % reqs_total)
    print("  reservation records left: %d; keys whose spend differs: %d, whose requests differ: %d;"
          " usage-settled requests not costing %d (json) / %d (stream) nano-USD: %d"
          % (left, len(key_cost_diff), len(key_reqs_diff), expected["json"], expected["stream"], wrong_usage))
    if left:
        failures.append("%d reservations never settled" % left)
    if logged_total != life_total:
        failures.append("logged costs %d != lifetime spend counters %d (difference %d)"
                        % (logged_total, life_total, life_total - logged_total))
    if project_life != life_total or org_life != life_total:
        failures.append("the projects' (%d) or the orgs' (%d) lifetime spend is not the keys' (%d)"
                        % (project_life, org_life, life_total))
    if with_cost != reqs_total:
        failures.append("%d log lines with a cost != %d counted requests" % (with_cost, reqs_total))
    if key_cost_diff:
        failures.append("spend differs for keys %s" % ", ".join(key_cost_diff[:5]))
    if key_reqs_diff:
        failures.append("requests differ for keys %s" % ", ".join(key_reqs_diff[:5]))
    if wrong_usage:
        failures.append("%d requests settled from usage at another cost than their usage's" % wrong_usage)
    if with_cost == 0:
        failures.append("no request was logged with a cost")
    m = metrics(metrics_port) if metrics_port != "-" else {
        "spend_cap_cost_nanousd_total": logged_total, 'spend_cap_requests_total{decision="allow"}': with_cost,
        "spend_cap_settlement_backlog": 0}  # (STATUS=0: nothing to compare)
    print("  metrics: cost %s nano-USD, requests allowed %s, settlement backlog %s"
          % (m.get("spend_cap_cost_nanousd_total"), m.get('spend_cap_requests_total{decision="allow"}'),
             m.get("spend_cap_settlement_backlog")))
    if m.get("spend_cap_cost_nanousd_total") != logged_total:
        failures.append("spend_cap_cost_nanousd_total %s != logged costs %d"
                        % (m.get("spend_cap_cost_nanousd_total"), logged_total))
    # (a 499 that left before its reserve was answered has no decision: counted nowhere)
    if m.get('spend_cap_requests_total{decision="allow"}') != with_cost:
        failures.append("spend_cap_requests_total{decision=\"allow\"} %s != %d requests with a cost"
                        % (m.get('spend_cap_requests_total{decision="allow"}'), with_cost))
    if m.get("spend_cap_settlement_backlog") != 0:
        failures.append("spend_cap_settlement_backlog is %s, not 0" % m.get("spend_cap_settlement_backlog"))
    for f in failures[:20]:
        print("  FAIL: " + f)
    print("  smoke check: " + ("FAILED" if failures else "exact"))
    return 1 if failures else 0


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "policy":
        policy(int(args[0]), int(args[1]), args[2], args[3] != "api")
    elif what == "api_keys":
        api_keys(args[0], args[1], int(args[2]), int(args[3]), args[4])
    elif what == "counted":
        counted(*args)
    elif what == "quiet":
        sys.exit(quiet(*args))
    elif what == "redis":
        redis_delta(*args)
    elif what == "check":
        sys.exit(check(*args))
    else:
        sys.exit("bench.py: unknown command " + what)
PY
helper() { "$python" "$dir/bench.py" "$@"; }

# --- Redis -----------------------------------------------------------------------
if [ "$redis_mode" = standalone ]; then
    redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
        --daemonize no --logfile "$dir/redis.log" &
    redis_pids=$!
else
    # 3 masters, each in its own dir and with an explicit cluster bus port (not port + 10000,
    # which nothing checked was free); seeds counts the nodes started so far
    bus_ports=("$bus_port_1" "$bus_port_2" "$bus_port_3") seeds=()
    for p in $redis_ports; do
        mkdir -p "$dir/redis-$p"
        redis-server --bind 127.0.0.1 --port "$p" --dir "$dir/redis-$p" --cluster-enabled yes \
            --cluster-config-file "$dir/redis-$p/nodes.conf" --cluster-node-timeout 5000 \
            --cluster-port "${bus_ports[${#seeds[@]}]}" --save "" --appendonly no \
            --daemonize no --logfile "$dir/redis-$p/redis.log" &
        redis_pids+=" $!"
        seeds+=("127.0.0.1:$p")
    done
fi
for p in $redis_ports; do
    for _ in $(seq 1 50); do
        redis-cli -p "$p" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    redis-cli -p "$p" ping 2>/dev/null | grep -q PONG \
        || die "redis-server on port $p did not start: $(cat "$dir/redis.log" "$dir/redis-$p/redis.log" 2>/dev/null | tail -2)"
done
redis_what=""   # how the run's Redis differs from one redis-server, for the summaries
if [ "$redis_mode" = cluster ]; then
    redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes > "$dir/cluster-create.log" 2>&1 \
        || die "redis-cli --cluster create failed: $(tail -5 "$dir/cluster-create.log")"
    # ready once every node says cluster_state:ok and sees 3 masters with slots
    cluster_ready() {
        local p
        for p in $redis_ports; do
            [[ "$(redis-cli -p "$p" cluster info)" == *cluster_state:ok* ]] || return 1
            [ "$(redis-cli -p "$p" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ && NF >= 9' | wc -l)" = 3 ] || return 1
        done
    }
    for _ in $(seq 1 100); do
        cluster_ready && break
        sleep 0.1
    done
    cluster_ready || die "the Redis Cluster is not ready after 10 s: $(redis-cli -p "$redis_port" cluster info | head -3 | tr -d '\r')"
    redis_what="redis: cluster of 3 masters (no replicas), ports ${redis_ports// /, }"
    say "$redis_what"
fi

# --- Policy: KEYS keys per case, over ORGS orgs, generous caps -------------------
key_source=${KEY_SOURCE:-file}
[[ "$key_source" =~ ^(file|api)$ ]] || die "KEY_SOURCE=$key_source: file or api"
helper policy "$nkeys" "$norgs" "$dir" "$key_source"
if [ "$nkeys" = 1 ]; then
    keys_what="one key per case (key_bench, key_bench_sse; org bench)"
else
    keys_what="KEYS=$nkeys per case over ORGS=$norgs orgs, a random key per request (json: sk-bench-<i>, stream: sk-bench-sse-<i>)"
fi
[ "$key_source" = file ] || keys_what="$keys_what; keys created through the management API"
say "policy: $keys_what, $(wc -c < "$dir/policy.yaml") bytes"

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
        if [ "$redis_mode" = cluster ]; then
            echo "    spend_cap_redis_cluster ${seeds[*]};"
        else
            echo "    spend_cap_redis 127.0.0.1:$redis_port;"
        fi
        echo "    spend_cap_policy $dir/policy.yaml;"
    fi
    if [ "$3" = 1 ] && [ -n "$smoke" ]; then
        # SMOKE: what each request settled at, unbuffered, for the exactness check
        echo "    log_format smoke '\$spend_cap_key_id \$spend_cap_cost_usd \$spend_cap_settled_from \$status \$uri';"
        echo "    access_log $1/access.log smoke;"
        # it checks counts, not latency: on a busy box Redis may take longer than 100 ms
        echo "    spend_cap_timeout 10s;"
    else
        echo "    access_log off;"
    fi
    cat <<EOF
    upstream fake {
        server 127.0.0.1:$up_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
$([ "$3" = 1 ] && [ "$key_source" = api ] && printf '    server {\n        listen 127.0.0.1:%s;\n        location /spend-cap/ { spend_cap_admin %s; spend_cap_timeout 2s; }\n    }\n' "$admin_port" "$dir/admin.token")
    server {
        listen 127.0.0.1:$2 backlog=4096;
        keepalive_requests 1000000;
$([ "$3" = 1 ] && [ "$status" = 1 ] && echo "        location = /metrics { spend_cap_status; }")
        location /v1/ {
$([ "$3" = 1 ] && echo "            spend_cap on;")
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        # streams are proxied unbuffered, as a streaming gateway is: each chunk passes
        # at once (and a 50 KB answer never spills to a temp file)
        location /v1/sse/ {
$([ "$3" = 1 ] && echo "            spend_cap on;")
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
}
(umask 077; echo "bench-admin-$RANDOM$RANDOM$RANDOM" > "$dir/admin.token")
front "$dir/plain" "$plain_port" 0 > "$dir/plain/nginx.conf"
front "$dir/module" "$module_port" 1 > "$dir/module/nginx.conf"

start_nginx() { # $1 = name, $2 = port
    local p="$dir/$1"
    "$nginx_bin" -p "$p" -c "$p/nginx.conf" -e "$p/error.log" -t -q \
        || die "nginx -t failed for the $1 server ($p/nginx.conf)"
    "$nginx_bin" -p "$p" -c "$p/nginx.conf" -e "$p/error.log"
    for _ in $(seq 1 100); do
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
# The secrets wrk sends, per case: sk-bench-<i> / sk-bench-sse-<i>, or the API's.
if [ "$key_source" = api ]; then
    [ "$has_module" = 1 ] || die "KEY_SOURCE=api creates keys through the module's API: SIDES must include module"
    t0=$SECONDS
    helper api_keys "$admin_port" "$dir/admin.token" "$nkeys" "$norgs" "$dir"
    say "created $((2 * nkeys)) keys through the management API in $((SECONDS - t0)) s"
else
    for i in $(seq 0 $((nkeys - 1))); do echo "sk-bench-$i"; done > "$dir/secrets.json"
    for i in $(seq 0 $((nkeys - 1))); do echo "sk-bench-sse-$i"; done > "$dir/secrets.stream"
fi
first_secret=$(head -1 "$dir/secrets.json")
first_sse_secret=$(head -1 "$dir/secrets.stream")

# Worker RSS in KiB, summed over the workers of server $1.
worker_rss() {
    local master
    master=$(cat "$dir/$1/nginx.pid")
    ps -o rss= --ppid "$master" | awk '{s += $1; n++} END {printf "%d KiB (%d workers)", s, n}'
}
clk_tck=$(getconf CLK_TCK)
# CPU used so far by the workers of server $1, in clock ticks: utime + stime of
# /proc/PID/stat (fields 14 and 15; counted after the ")" that ends the command name).
worker_ticks() {
    local p files=()
    for p in $(ps -o pid= --ppid "$(cat "$dir/$1/nginx.pid")"); do
        [ -r "/proc/$p/stat" ] && files+=("/proc/$p/stat")
    done
    [ ${#files[@]} -gt 0 ] || { echo 0; return; }
    cat "${files[@]}" 2>/dev/null | awk '{sub(/^.*\) /, ""); s += $12 + $13} END {print s + 0}'
}
# Redis's CPU and command counters, to file $1 (every master's, one after the other).
redis_snapshot() {
    local p
    for p in $redis_ports; do redis-cli -p "$p" info cpu; redis-cli -p "$p" info commandstats; done > "$1"
}
# "N keys, M used"; REDIS=cluster: the keys summed and the memory of each master.
redis_size() {
    local p keys=0 each=() mem=()
    for p in $redis_ports; do
        each+=("$(redis-cli -p "$p" dbsize)")
        keys=$((keys + ${each[-1]}))
        mem+=("$(redis-cli -p "$p" info memory | sed -n 's/^used_memory_human:\([^\r]*\).*/\1/p')")
    done
    if [ "$redis_mode" = cluster ]; then
        echo "$keys keys ($(printf '%s + ' "${each[@]}" | sed 's/ + $//') over the 3 masters), $(printf '%s / ' "${mem[@]}" | sed 's, / $,,') used"
    else
        echo "$keys keys, ${mem[0]} used"
    fi
}
# Waits (at most $1 s) until every reservation is settled: none held in sc:{*}:reserved.
settled() {
    local out
    out=$(helper quiet "$redis_ports" "$1") && return 0
    say "after ${out#* } s, ${out%% *} reservations are still held"
    return 1
}

# --- Sanity: one request through each front --------------------------------------
body='{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
sse_body='{"model":"gpt-4o-mini","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Count to two hundred."}]}'
for side in "${sides[@]}"; do
    port_var="${side}_port"
    code=$(curl -s -o "$dir/$side.sanity" -w '%{http_code}' --max-time 5 \
        "http://127.0.0.1:${!port_var}/v1/chat/completions" \
        -H "Authorization: Bearer $first_secret" -H 'Content-Type: application/json' -d "$body" || true)
    [ "$code" = 200 ] || die "$side: a single request answered $code, not 200: $(cat "$dir/$side.sanity" 2>/dev/null); $(tail -5 "$dir/$side/error.log")"
done
if [[ " ${cases[*]} " == *" stream "* ]]; then
    for side in "${sides[@]}"; do
        port_var="${side}_port"
        code=$(curl -s -o "$dir/$side.sse.sanity" -w '%{http_code}' --max-time 5 \
            "http://127.0.0.1:${!port_var}/v1/sse/chat/completions" \
            -H "Authorization: Bearer $first_sse_secret" -H 'Content-Type: application/json' -d "$sse_body" || true)
        [ "$code" = 200 ] && tail -c 14 "$dir/$side.sse.sanity" | grep -q 'data: \[DONE\]' \
            || die "$side: a single streaming request answered $code, not a 200 stream ending in [DONE]: $(head -c 300 "$dir/$side.sse.sanity" 2>/dev/null); $(tail -5 "$dir/$side/error.log")"
    done
fi

# --- wrk -----------------------------------------------------------------------
write_lua() { # $1 = file, $2 = path, $3 = file of secrets (one per line), $4 = body
    if [ "$nkeys" = 1 ]; then
        cat > "$1" <<EOF
wrk.method = "POST"
wrk.path = "$2"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $(head -1 "$3")"
wrk.body = '$4'
EOF
    else
        cat > "$1" <<EOF
wrk.method = "POST"
wrk.path = "$2"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$4'

-- KEYS=$nkeys: each request carries one of the secrets of $3,
-- picked at random; the requests are formatted once per key, here, not per request.
local nkeys = $nkeys
local secrets = {}
for line in io.lines("$3") do secrets[#secrets + 1] = line end
local by_key = {}
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  math.randomseed(7919 * (1 + (tid or 0)))
  for i = 0, nkeys - 1 do
    by_key[i + 1] = wrk.format(nil, nil, {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. secrets[i + 1],
    }, nil)
  end
end
function request()
  return by_key[math.random(nkeys)]
end
EOF
    fi
    cat >> "$1" <<'EOF'

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
write_lua "$dir/post.lua" /v1/chat/completions "$dir/secrets.json" "$body"
write_lua "$dir/sse.lua" /v1/sse/chat/completions "$dir/secrets.stream" "$sse_body"

# Keys: "$side" for the json case (as before), "$side:stream" for the streaming one.
declare -A rss_before rss_after result ticks_front ticks_up redis_fig

run_case() { # $1 = case (json|stream)
    local c=$1 lua suffix side port_var url f0 u0
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
        # the warm-up's settlements land before the measured run starts
        if [ "$side" = module ]; then settled 10 || true; else sleep 0.2; fi
        echo
        echo "=== $side${suffix:+ ($c)}: $url"
        f0=$(worker_ticks "$side"); u0=$(worker_ticks upstream)
        redis_snapshot "$dir/redis.$side$suffix.before"
        wrk -t"$threads" -c"$conns" -d"${duration}s" --latency -s "$lua" "$url" | tee "$dir/$side$suffix.wrk"
        ticks_front[$side$suffix]=$(( $(worker_ticks "$side") - f0 ))
        ticks_up[$side$suffix]=$(( $(worker_ticks upstream) - u0 ))
        redis_snapshot "$dir/redis.$side$suffix.after"
        result[$side$suffix]=$(grep '^RESULT ' "$dir/$side$suffix.wrk" | tail -1)
        rss_after[$side$suffix]=$(worker_rss "$side")
    done
}

field() { # $1 = "k=v k=v" line, $2 = name
    tr ' ' '\n' <<< "$1" | awk -F= -v k="$2" '$1 == k {print $2}'
}
# $1 ticks of CPU over $2 requests, in µs a request
us_per_req() { awk -v t="$1" -v n="$2" -v hz="$clk_tck" 'BEGIN {printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0)}'; }
ms() { awk -v x="$1" 'BEGIN {printf "%.2f", x / 1000}'; }

bad=0
table_rows=()
table_deltas=()
summary() { # $1 = case
    local c=$1 suffix="" side r errs non2xx req rf
    [ "$c" = json ] || suffix=":$c"
    for side in "${sides[@]}"; do
        redis_fig[$side$suffix]=$(helper redis "$dir/redis.$side$suffix.before" "$dir/redis.$side$suffix.after" \
            "$(field "${result[$side$suffix]}" requests)")
    done
    echo
    if [ "$c" = json ]; then
        echo "=== summary (wrk -t$threads -c$conns -d${duration}s, $workers worker(s) per front, $(nproc) CPUs; $keys_what)"
        [ -z "$redis_what" ] || echo "$redis_what"
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
            "$(ms "$(field "$r" p50_us)")" "$(ms "$(field "$r" p90_us)")" "$(ms "$(field "$r" p99_us)")" \
            "$non2xx" "$errs" "${rss_before[$side$suffix]}" "${rss_after[$side$suffix]}" \
            "$(awk -v f="${ticks_front[$side$suffix]}" -v u="${ticks_up[$side$suffix]}" -v hz="$clk_tck" \
                'BEGIN {printf "%.2f/%.2f", f / hz, u / hz}')/$(field "${redis_fig[$side$suffix]}" cpu_s)"
    done
    echo "per request (over wrk's measured run):"
    printf '%-7s %10s %14s %14s %12s %16s   %s\n' side requests 'worker µs/req' 'upstream µs' 'redis µs/req' 'redis cmds/req' 'EVALSHA µs/req; biggest commands, calls/req'
    for side in "${sides[@]}"; do
        r=${result[$side$suffix]} rf=${redis_fig[$side$suffix]}
        req=$(field "$r" requests)
        printf '%-7s %10s %14s %14s %12s %16s   %s; %s\n' "$side" "$req" \
            "$(us_per_req "${ticks_front[$side$suffix]}" "$req")" "$(us_per_req "${ticks_up[$side$suffix]}" "$req")" \
            "$(field "$rf" redis_us_req)" "$(field "$rf" cmds_req)" "$(field "$rf" evalsha_us_req)" "$(field "$rf" top | tr ',' ' ')"
    done
    if [ "$has_module" = 1 ]; then
        echo "redis commands per request (module${suffix:+, $c}): $(field "${redis_fig[module$suffix]}" cmds_req)" \
             "($(field "${redis_fig[module$suffix]}" top | sed 's/:/ /g; s/,/, /g'); EVALSHA $(field "${redis_fig[module$suffix]}" evalsha_us_req) µs a request)"
    fi
    local ratio="" delta=""
    if [ "$has_module" = 1 ] && [[ " ${sides[*]} " == *" plain "* ]]; then
        ratio=$(awk -v m="$(field "${result[module$suffix]}" rps)" -v p="$(field "${result[plain$suffix]}" rps)" \
            'BEGIN {printf "%.3f", (p > 0 ? m / p : 0)}')
        delta=$(awk -v m="$(us_per_req "${ticks_front[module$suffix]}" "$(field "${result[module$suffix]}" requests)")" \
                    -v p="$(us_per_req "${ticks_front[plain$suffix]}" "$(field "${result[plain$suffix]}" requests)")" \
            'BEGIN {printf "%+.1f", m - p}')
        echo "module/plain requests/s${suffix:+ ($c)}: $ratio; worker CPU module − plain: $delta µs a request"
        table_deltas+=("$c $delta")
    fi
    for side in "${sides[@]}"; do
        r=${result[$side$suffix]} rf=${redis_fig[$side$suffix]}
        req=$(field "$r" requests)
        local cell="—"
        [ "$side" = module ] && [ -n "$ratio" ] && cell=$ratio
        table_rows+=("$(printf '| %s | %s | %.0f | %s | %s | %s | %s | %s | %s |' "$c" "$side" "$(field "$r" rps)" \
            "$(ms "$(field "$r" p50_us)")" "$(ms "$(field "$r" p99_us)")" \
            "$(us_per_req "${ticks_front[$side$suffix]}" "$req")" "$(field "$rf" redis_us_req)" \
            "$(field "$rf" cmds_req)" "$cell")")
    done

    # What the module counted for the case's keys today, against the fake upstream's usage.
    if [ "$has_module" = 1 ]; then
        local per=$per_request_nanousd what="12 prompt + 9 completion tokens = 7200 nano-USD a request"
        local list="$dir/keys.json" counted spent
        if [ "$c" != json ]; then
            per=$sse_per_request_nanousd list="$dir/keys.stream"
            what="12 prompt + $sse_events completion tokens in the final chunk = $sse_per_request_nanousd nano-USD a request"
        fi
        settled 10 || true
        read -r counted spent <<< "$(helper counted "$redis_ports" "$list" "$(date -u +%F)")"
        [ "$c" = json ] || echo "($what; the requests wrk leaves in flight when it stops are client aborts, settled at their reservation)"
        echo "redis: requests counted $counted over $nkeys key(s) (wrk's measured run: $(field "${result[module$suffix]}" requests), plus warm-up and one sanity request);" \
             "spend $spent nano-USD = $(awk -v s="$spent" -v n="$counted" 'BEGIN {printf "%.1f", (n > 0 ? s / n : 0)}')" \
             "a request (usage says $per)"
        [ "$c" = json ] && echo "redis: $(redis_size)"
    fi
    return 0
}

for c in "${cases[@]}"; do
    case "$c" in json|stream) run_case "$c" ;; *) die "unknown case $c (CASES=\"json stream\")" ;; esac
done
for c in "${cases[@]}"; do
    summary "$c"
done

echo
echo "=== table (wrk -t$threads -c$conns -d${duration}s, $workers worker(s) per front, $(nproc) CPUs; KEYS=$nkeys${smoke:+, SMOKE: the module front writes an access log})"
echo
[ -z "$redis_what" ] || printf '%s\n\n' "$redis_what"
echo "| case | side | req/s | p50 ms | p99 ms | worker µs/req | redis µs/req | redis cmds/req | module/plain req/s |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${table_rows[@]}"
if [ ${#table_deltas[@]} -gt 0 ]; then
    echo
    echo "worker CPU, module − plain: $(printf '%s µs/req, ' "${table_deltas[@]}" | sed 's/, $//')"
fi

smoke_failed=0
if [ -n "$smoke" ]; then
    echo
    settled 15 || true
    helper check "$redis_ports" "$dir/module/access.log" "$per_request_nanousd" "$sse_per_request_nanousd" \
        "$([ "$status" = 1 ] && echo "$module_port" || echo -)" || smoke_failed=1
fi
if grep -q '\[alert\]\|\[emerg\]\|\[crit\]' "$dir"/*/error.log; then
    echo "error logs have alert/crit/emerg lines:"
    grep -h '\[alert\]\|\[emerg\]\|\[crit\]' "$dir"/*/error.log | head -20
    bad=1
fi
[ -z "$smoke" ] || say "SMOKE took $((SECONDS - started)) s"
if [ "$bad" = 1 ]; then
    say "WARNING: non-2xx answers or critical log lines: the comparison above is not like for like"
    exit 1
fi
if [ "$smoke_failed" = 1 ]; then
    say "SMOKE: the counters are not exact (see the check above)"
    exit 1
fi
