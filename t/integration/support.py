"""Shared helpers of the integration tests: processes (redis-server, the fake
provider, NGINX), the policy YAML, money arithmetic and Redis key names, all
mirroring SPEC.md."""

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import redis as redis_lib

REPO = Path(__file__).resolve().parents[2]
MODULE = Path(os.environ.get("SPEND_CAP_MODULE", str(REPO / "build" / "ngx_http_spend_cap_module.so")))
NGINX_BIN = os.environ.get("TEST_NGINX_BINARY", "/usr/sbin/nginx")
REDIS_BIN = os.environ.get("TEST_REDIS_BINARY") or shutil.which("redis-server") or "/usr/bin/redis-server"
# What load_module names: a copy of MODULE taken once per session (conftest), so that a
# rebuild that rewrites the .so in place cannot crash the NGINX instances under test.
MODULE_LOADED = MODULE
FAKE_PROVIDER = REPO / "t" / "fake_provider.py"
# SPEND_CAP_SANITIZE=1: the module was built with AddressSanitizer and
# UndefinedBehaviorSanitizer (SANITIZE=1 scripts/build.sh); every NGINX runs
# with their runtimes preloaded, writes any report to sanitizer.* in its prefix
# directory, and a test whose NGINX wrote one fails (Nginx.check_error_log).
SANITIZE = os.environ.get("SPEND_CAP_SANITIZE", "0") == "1"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"

NANOS_PER_USD = 1_000_000_000

# Every $spend_cap_* variable of this release, as JSON in the access log.
SPEND_CAP_VARS = ["key_id", "project", "org", "customer", "decision", "blocked_by", "reserved_usd",
                  "cost_usd", "settled_from", "input_tokens", "output_tokens"]


# ---------------------------------------------------------------- utilities

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# Every wait is for an event and returns as soon as it comes: its bound only
# decides how long a box busy with other work may take. Tests give the bound a
# quiet box needs; it is stretched this many times (SPEND_CAP_WAIT_SCALE).
WAIT_SCALE = float(os.environ.get("SPEND_CAP_WAIT_SCALE", "10"))


def wait_until(fn, timeout=3.0, interval=0.02):
    """Polls fn() until it returns a truthy value; returns the last value (after
    timeout x WAIT_SCALE seconds at most)."""
    deadline = time.monotonic() + timeout * WAIT_SCALE
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def sha256_hex(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


# ------------------------------------------------------------------ money

def price_nanos(usd):
    """USD per million tokens (decimal string) -> nano-USD per million tokens."""
    v = Decimal(str(usd)) * NANOS_PER_USD
    assert v == v.to_integral_value(), usd
    return int(v)


def usd_nanos(usd):
    return price_nanos(usd)


def cost_nanos(*parts):
    """ceil(sum(tokens * price_nanos_per_million) / 1e6) (SPEC section 4)."""
    total = sum(int(tokens) * int(price) for tokens, price in parts)
    return -(-total // 1_000_000)


def format_usd(nanos):
    """Decimal USD like the module prints it: "10.00", "0.000012345"."""
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    whole, frac = divmod(nanos, NANOS_PER_USD)
    frac_s = ("%09d" % frac).rstrip("0")
    if len(frac_s) < 2:
        frac_s = frac_s.ljust(2, "0")
    return "%s%d.%s" % (sign, whole, frac_s)


# ------------------------------------------------------------------ periods

def utc_now():
    return _dt.datetime.now(_dt.timezone.utc)


def rfc3339(d):
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


class Periods:
    def __init__(self, now=None):
        now = now or utc_now()
        self.now = now
        self.day = now.strftime("%Y-%m-%d")
        self.month = now.strftime("%Y-%m")
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        self.day_reset_dt = midnight + _dt.timedelta(days=1)
        first = midnight.replace(day=1)
        self.month_reset_dt = (first + _dt.timedelta(days=32)).replace(day=1)
        self.day_reset = rfc3339(self.day_reset_dt)
        self.month_reset = rfc3339(self.month_reset_dt)
        # UTC minute of the rpm / tpm counters (SPEC section 6: ...:rpm:YYYY-MM-DDTHH:MM)
        self.minute = now.strftime("%Y-%m-%dT%H:%M")
        self.minute_reset_dt = now.replace(second=0, microsecond=0) + _dt.timedelta(minutes=1)
        self.minute_reset = rfc3339(self.minute_reset_dt)

    def seconds_to_minute_end(self):
        return (self.minute_reset_dt - self.now).total_seconds()

    def suffix(self, window):
        return {"daily": "d:" + self.day, "monthly": "m:" + self.month, "lifetime": "life"}[window]

    def reset(self, window):
        return {"daily": self.day_reset, "monthly": self.month_reset, "lifetime": None,
                "minute": self.minute_reset}[window]

    def period(self, window):
        """The period string of events (sc:{ORG}:events): "" for lifetime."""
        return {"daily": self.day, "monthly": self.month, "lifetime": ""}[window]


def fresh_minute(margin=5.0):
    """Rate tests must not straddle a UTC minute: when fewer than `margin` seconds are
    left in the current one, sleep into the next. Returns the Periods of now."""
    p = Periods()
    left = p.seconds_to_minute_end()
    if left < margin:
        time.sleep(left + 0.05)
        p = Periods()
    return p


WINDOWS = ["daily", "monthly", "lifetime"]
# Request and token counters have no lifetime window (only spend has).
COUNT_WINDOWS = ["daily", "monthly"]
SCOPES = ["key", "project", "org"]
ALL_SCOPES = ["key", "project", "org", "customer"]
SCOPE_WORD = {"key": "api key", "project": "project", "org": "account", "customer": "customer"}


def counter_key(org, kind, scope, ident, window, periods=None):
    periods = periods or Periods()
    return "sc:{%s}:%s:%s:%s:%s" % (org, kind, scope, ident, periods.suffix(window))


def all_counter_keys(chain, kind="spend", periods=None):
    """chain: {"key": id, "project": id, "org": id[, "customer": id]}; returns the
    counter keys of every scope of the chain: spend daily, monthly and lifetime (9, or
    12 with a customer), requests and tokens daily and monthly only (6, or 8)."""
    periods = periods or Periods()
    org = chain["org"]
    windows = WINDOWS if kind == "spend" else COUNT_WINDOWS
    scopes = ALL_SCOPES if chain.get("customer") else SCOPES
    return [counter_key(org, kind, scope, chain[scope], w, periods) for scope in scopes for w in windows]


def rate_key(org, scope, ident, kind, periods=None):
    """sc:{ORG}:rate:SCOPE:ID:rpm:YYYY-MM-DDTHH:MM (kind rpm or tpm)."""
    periods = periods or Periods()
    return "sc:{%s}:rate:%s:%s:%s:%s" % (org, scope, ident, kind, periods.minute)


def balance_key(org):
    return "sc:{%s}:balance" % org


def held_key(org):
    return "sc:{%s}:balance:held" % org


def events_key(org):
    return "sc:{%s}:events" % org


def read_events(r, org, type_=None):
    """The entries of sc:{ORG}:events (field dicts, oldest first), optionally of one type."""
    out = [fields for _id, fields in r.xrange(events_key(org))]
    if type_ is not None:
        out = [e for e in out if e.get("type") == type_]
    return out


def int_or_zero(v):
    return int(v) if v is not None else 0


def read_counters(r, keys):
    vals = r.mget(keys)
    return {k: (int(v) if v is not None else 0) for k, v in zip(keys, vals)}


def snapshot(r):
    """Every key in Redis with its value (strings and hashes), for 'nothing changed' checks."""
    out = {}
    for k in r.scan_iter(count=1000):
        t = r.type(k)
        if t == b"string" or t == "string":
            out[k] = r.get(k)
        elif t in (b"hash", "hash"):
            out[k] = r.hgetall(k)
        elif t in (b"zset", "zset"):
            out[k] = r.zrange(k, 0, -1, withscores=True)
        elif t in (b"set", "set"):
            out[k] = sorted(r.smembers(k))
        else:
            out[k] = t
    return out


# ---------------------------------------------------------------- policy YAML

def _yaml_scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, Decimal)):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    if s == "" or any(c in s for c in ":#{}[],&*!|>'\"%@`") and not _is_timestamp(s) or s != s.strip():
        return json.dumps(s)
    return s


def _is_timestamp(s):
    try:
        _dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")
        return True
    except ValueError:
        return False


def to_yaml(obj, indent=0):
    """A small block-style YAML emitter (no dependency on PyYAML)."""
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                lines.append("%s%s:" % (pad, k))
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, dict):
                lines.append("%s%s: {}" % (pad, k))
            elif isinstance(v, list) and v:
                lines.append("%s%s:" % (pad, k))
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, list):
                lines.append("%s%s: []" % (pad, k))
            else:
                lines.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = to_yaml(item, indent + 2)
                lines.append(pad + "- " + sub[indent + 2:])
            else:
                lines.append("%s- %s" % (pad, _yaml_scalar(item)))
    else:
        lines.append(pad + _yaml_scalar(obj))
    return "\n".join(lines)


# Test secrets; the policy stores only their SHA-256.
SECRETS = {
    "k1": "sk-test-k1-3f9a0c",
    "k_open": "sk-test-open-77b1",
    "k_expired": "sk-test-expired-0d2e",
    "k_future": "sk-test-future-91aa",
    "k_revoked": "sk-test-revoked-5c4d",
    "kb": "sk-test-beta-e1f0",
}

# Key id -> its chain of scope ids in the default policy.
CHAINS = {
    "k1": {"key": "k1", "project": "acme-prod", "org": "acme"},
    "k_open": {"key": "k_open", "project": "acme-prod", "org": "acme"},
    "k_future": {"key": "k_future", "project": "acme-prod", "org": "acme"},
    "kb": {"key": "kb", "project": "beta-main", "org": "beta"},
}

# The caps of the default policy, USD.
CAPS = {
    ("key", "daily"): "2", ("key", "monthly"): "10", ("key", "lifetime"): "40",
    ("project", "daily"): "20", ("project", "monthly"): "200", ("project", "lifetime"): "2000",
    ("org", "daily"): "50", ("org", "monthly"): "500", ("org", "lifetime"): "5000",
}

MODELS = {
    "gpt-4o-mini": {"input": "0.15", "output": "0.60", "cached_input": "0.075", "max_output_tokens": 16384},
    "claude-sonnet-4-5": {"input": "3.00", "output": "15.00", "cache_write": "3.75", "cache_read": "0.30",
                          "max_output_tokens": 64000},
    # odd prices (ceil matters) and no max_output_tokens (default_max_output_tokens applies)
    "odd-model": {"input": "0.123456789", "output": "0.987654321"},
}


def limits(scope):
    return {"%s_usd" % w: CAPS[(scope, w)] for w in WINDOWS}


def default_policy():
    return {
        "models": {name: dict(p) for name, p in MODELS.items()},
        "unknown_model": "reject",
        "default_max_output_tokens": 4096,
        "orgs": {
            "acme": {"limits": limits("org")},
            "beta": {"limits": {"monthly_usd": "100"}},
        },
        "projects": {
            "acme-prod": {"org": "acme", "limits": limits("project")},
            "beta-main": {"org": "beta"},
        },
        "keys": [
            {"id": "k1", "sha256": sha256_hex(SECRETS["k1"]), "project": "acme-prod", "limits": limits("key")},
            {"id": "k_open", "sha256": sha256_hex(SECRETS["k_open"]), "project": "acme-prod"},
            {"id": "k_expired", "sha256": sha256_hex(SECRETS["k_expired"]), "project": "acme-prod",
             "expires_at": "2020-01-01T00:00:00Z"},
            {"id": "k_future", "sha256": sha256_hex(SECRETS["k_future"]), "project": "acme-prod",
             "expires_at": "2099-01-01T00:00:00Z"},
            {"id": "k_revoked", "sha256": sha256_hex(SECRETS["k_revoked"]), "project": "acme-prod",
             "revoked": True},
            {"id": "kb", "sha256": sha256_hex(SECRETS["kb"]), "project": "beta-main"},
        ],
    }


def price_of(model, policy=None):
    """Nano-USD per million tokens by kind; a model with cache_write and no
    cache_write_1h gets Anthropic's one-hour price, 2 x input (as the module)."""
    p = (policy or default_policy())["models"][model]
    out = {k: price_nanos(v) for k, v in p.items() if k not in ("max_output_tokens", "context_window")}
    if "cache_write" in out and "cache_write_1h" not in out:
        out["cache_write_1h"] = 2 * out["input"]
    return out


def max_input_rate(model, policy=None):
    p = price_of(model, policy)
    return max(p.get(k, 0) for k in ("input", "cached_input", "cache_write", "cache_write_1h", "cache_read"))


def estimate_nanos(model, body_len, max_tokens=None, policy=None):
    pol = policy or default_policy()
    p = price_of(model, pol)
    out = max_tokens
    if out is None:
        out = pol["models"][model].get("max_output_tokens", pol.get("default_max_output_tokens", 4096))
    return cost_nanos((body_len, max_input_rate(model, pol)), (out, p["output"]))


def sent_length(fake, index=-1):
    """The length of the body the provider got: what bounds the input a request
    reserves (the module may have added an output bound or stream_options)."""
    return fake.requests()[index]["body_len"]


def estimate_tokens(body_len, max_tokens):
    """The tokens a request reserves: input bounded by the body's bytes, output by max tokens."""
    return int(body_len) + int(max_tokens)


def openai_cost(model, prompt, completion, cached=0, policy=None):
    p = price_of(model, policy)
    return cost_nanos((prompt - cached, p["input"]), (cached, p.get("cached_input", p["input"])),
                      (completion, p["output"]))


def anthropic_cost(model, inp, out, cache_write=0, cache_read=0, policy=None):
    p = price_of(model, policy)
    return cost_nanos((inp, p["input"]), (cache_write, p.get("cache_write", p["input"])),
                      (cache_read, p.get("cache_read", p["input"])), (out, p["output"]))


# ---------------------------------------------------------------- processes

class RedisServer:
    def __init__(self, workdir, port=None, extra_args=(), password=None, unixsocket=None, bind="127.0.0.1"):
        self.workdir = Path(workdir)
        self.bind = bind
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.port = port or free_port()
        self.proc = None
        self.paused = False
        self.password = password
        self.unixsocket = unixsocket
        self.extra_args = list(extra_args)
        if password:
            self.extra_args += ["--requirepass", password]
        if unixsocket:
            self.extra_args += ["--unixsocket", str(unixsocket), "--unixsocketperm", "777"]

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", self.bind, "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"),
             "--daemonize", "no", "--protected-mode", "no"] + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited at start: rc=%s, log:\n%s"
                                   % (self.proc.returncode, self.log()))
            try:
                if self.client().ping():
                    return self
            except redis_lib.exceptions.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING on port %d" % self.port)

    def client(self, db=0):
        return redis_lib.Redis(host=self.bind, port=self.port, socket_timeout=5, decode_responses=True,
                               password=self.password, db=db)

    def log(self):
        try:
            return (self.workdir / "redis.log").read_text()
        except OSError:
            return ""

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self):
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        wait_until(lambda: not port_open(self.port, self.bind), timeout=5)


class FakeProvider:
    def __init__(self, port=None, log_path=None):
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = log_path
        self.proc = None

    def start(self, timeout=10):
        err = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([PYTHON, str(FAKE_PROVIDER), "--host", "127.0.0.1", "--port", str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("fake provider exited at start: rc=%s" % self.proc.returncode)
            try:
                if httpx.get(self.url + "/__fake/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("fake provider did not come up on port %d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def requests(self):
        r = httpx.get(self.url + "/__fake/requests", timeout=10)
        r.raise_for_status()
        return r.json()

    def reset(self):
        httpx.delete(self.url + "/__fake/requests", timeout=10).raise_for_status()

    def release(self, tag):
        """Lets the requests held with x-fake-hold: TAG answer."""
        httpx.post(self.url + "/__fake/release", params={"tag": tag}, timeout=10).raise_for_status()


def nginx_env(report_dir):
    """The environment an NGINX of the tests starts with: with SANITIZE, the
    sanitizers' runtimes preloaded, their reports written to report_dir/sanitizer.*."""
    env = dict(os.environ)
    if SANITIZE:
        runtimes = [subprocess.run(["gcc", "-print-file-name=%s" % lib], capture_output=True, text=True,
                                   check=True).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
        env["LD_PRELOAD"] = " ".join(runtimes)
        log = "log_path=%s" % (Path(report_dir) / "sanitizer")
        # NGINX keeps its pools to the end (no leak check); freed memory is filled,
        # so a read after free shows in what it read, even inside NGINX's own code
        env["ASAN_OPTIONS"] = ("%s:detect_leaks=0:max_free_fill_size=4096:free_fill_byte=85:"
                               "abort_on_error=1:disable_coredump=1" % log)
        env["UBSAN_OPTIONS"] = "%s:print_stacktrace=1" % log
    return env


def sanitizer_reports(report_dir):
    return sorted(p for p in Path(report_dir).iterdir() if p.name.startswith("sanitizer."))


NGINX_CONF = """\
{user}
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 8192;
error_log {tmp}/error.log info;
pid {tmp}/nginx.pid;
working_directory {tmp};
worker_rlimit_core 2g;
{load_module}
{main_extra}

events {{
    worker_connections 4096;
}}

http {{
    client_body_temp_path {tmp}/client_body_temp;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;

    log_format spend_cap escape=json '{log_fields}';
    access_log {tmp}/access.log spend_cap;

{http_directives}
{http_extra}

    server {{
        listen 127.0.0.1:{port};
{server_extra}

        location / {{
{location_directives}
{location_extra}
            add_header x-test-request-id $request_id always;
            proxy_pass {upstream};
        }}

        location /free/ {{
            add_header x-test-request-id $request_id always;
            proxy_pass {upstream}/;
        }}
    }}
}}
"""


class Nginx:
    """One NGINX instance in its own prefix directory."""

    def __init__(self, workdir, *, fake_port, redis_port=None, redis_addr=None, policy=None,
                 location_extra="", server_extra="", http_extra="", main_extra="", module=True,
                 spend_cap="on", workers=2, port=None, binary=None, redis_directive=None,
                 module_path=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.module = module
        # An NGINX with the module built in (--add-module) needs no load_module;
        # module_path: the .so another binary loads (default MODULE_LOADED).
        self.binary = binary or NGINX_BIN
        self.module_path = module_path
        self.loads_module = module and (binary is None or module_path is not None)
        self.policy_path = self.dir / "policy.yaml"
        self.conf_path = self.dir / "nginx.conf"
        self.error_log = self.dir / "error.log"
        self.access_log = self.dir / "access.log"
        self.proc = None
        self.workers = workers
        self.log_checked = False
        self.expected_log_lines = []  # substrings of [emerg]/[alert] lines a test expects

        if policy is None:
            policy = default_policy()
        self.policy_text = policy if isinstance(policy, str) else to_yaml(policy) + "\n"
        self.policy_path.write_text(self.policy_text)

        fields = ['"rid":"$request_id"', '"status":"$status"', '"method":"$request_method"',
                  '"uri":"$request_uri"', '"upstream_status":"$upstream_status"',
                  '"request_length":"$request_length"', '"pid":"$pid"']
        if module:
            fields += ['"%s":"$spend_cap_%s"' % (v, v) for v in SPEND_CAP_VARS]
        http_directives = ""
        location_directives = ""
        if module:
            # A busy machine may keep Redis from answering within the default 100 ms:
            # every test gets a generous reserve timeout (one that tests timeouts sets
            # its own in its location) instead of a 503 no test asked for.
            # redis_directive: the whole line instead (e.g. spend_cap_redis_cluster SEEDS...;)
            redis_line = redis_directive or "spend_cap_redis %s;" % (redis_addr or "127.0.0.1:%d" % redis_port)
            http_directives = ("    %s\n    spend_cap_policy %s;\n    spend_cap_timeout 10s;\n"
                               % (redis_line, self.policy_path))
            if spend_cap:
                location_directives = "            spend_cap %s;\n" % spend_cap
        self.conf_text = NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "",
            workers=workers,
            tmp=self.dir,
            load_module="load_module %s;" % (module_path or MODULE_LOADED) if self.loads_module else "",
            main_extra=main_extra,
            log_fields="{" + ",".join(fields) + "}",
            http_directives=http_directives,
            http_extra=_indent(http_extra, 4),
            port=self.port,
            server_extra=_indent(server_extra, 8),
            location_directives=location_directives,
            location_extra=_indent(location_extra, 12),
            upstream="http://127.0.0.1:%d" % fake_port,
        )
        self.conf_path.write_text(self.conf_text)

    def cmd(self, *args):
        return [self.binary, "-p", str(self.dir), "-c", str(self.conf_path), "-e", str(self.error_log)] + list(args)

    def test_config(self):
        """nginx -t; returns the CompletedProcess (text)."""
        return subprocess.run(self.cmd("-t"), capture_output=True, text=True, timeout=30, env=self.env())

    def env(self):
        """The environment NGINX starts with (the sanitizers' runtimes and options)."""
        return nginx_env(self.dir)

    def sanitizer_reports(self):
        return sanitizer_reports(self.dir)

    def start(self, timeout=10):
        if self.loads_module and not Path(self.module_path or MODULE_LOADED).exists():
            raise RuntimeError("the module is not built: %s (run scripts/build.sh, or set SPEND_CAP_MODULE)"
                               % MODULE)
        self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=self.env())
        pid_file = self.dir / "nginx.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                raise RuntimeError("nginx exited at start (rc=%s):\n%s\n--- error.log:\n%s\n--- nginx.conf:\n%s"
                                   % (self.proc.returncode, out, self.error_text(), self.conf_text))
            # listening (the master opens the sockets) and its workers forked (after that)
            if pid_file.exists() and port_open(self.port) and len(self.worker_pids()) >= self.workers:
                return self
            time.sleep(0.05)
        self.stop(check=False)
        raise RuntimeError("nginx did not start listening on %d with %d workers:\n%s"
                           % (self.port, self.workers, self.error_text()))

    def stop(self, check=True):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            self.proc = None
        if check:
            self.check_error_log()

    def reload(self):
        os.kill(self.proc.pid, signal.SIGHUP)

    def worker_pids(self):
        """The pids of the master's worker processes (not the cache manager's)."""
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % p) as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    cmdline = f.read()
            except (OSError, ValueError, IndexError):
                continue
            if parent == self.proc.pid and b"worker process" in cmdline:
                out.append(int(p))
        return sorted(out)

    def error_text(self):
        try:
            return self.error_log.read_text(errors="replace")
        except OSError:
            return ""

    def check_error_log(self):
        if self.log_checked:
            return
        self.log_checked = True
        bad = [line for line in self.error_text().splitlines()
               if ("[alert]" in line or "[emerg]" in line or "exited on signal" in line)
               and not any(p in line for p in self.expected_log_lines)]
        assert not bad, "error.log of %s has alerts/crashes:\n%s%s" % (self.dir, "\n".join(bad[:20]),
                                                                      self.core_backtraces())
        reports = self.sanitizer_reports()
        assert not reports, "sanitizer reports of %s:\n%s" % (
            self.dir, "\n".join("--- %s\n%s" % (p, p.read_text(errors="replace")[-6000:]) for p in reports[:3]))

    def core_backtraces(self):
        """gdb backtraces of the worker core dumps in the prefix directory, if any."""
        cores = sorted(p for p in self.dir.iterdir() if p.name == "core" or p.name.startswith("core."))
        if not cores:
            return ("\n(no core dump: the kernel's core_pattern or `ulimit -c` of the test "
                    "process prevented it)")
        gdb = shutil.which("gdb")
        out = []
        for core in cores[:2]:
            if not gdb:
                out.append("\ncore dump: %s (install gdb for a backtrace)" % core)
                continue
            try:
                bt = subprocess.run([gdb, "-batch", "-nx", "-ex", "bt 30", NGINX_BIN, str(core)],
                                    capture_output=True, text=True, timeout=60).stdout
            except (OSError, subprocess.TimeoutExpired) as e:
                bt = "gdb failed: %s" % e
            frames = [line for line in bt.splitlines() if line.startswith("#")]
            out.append("\nbacktrace of %s:\n%s" % (core, "\n".join(frames) or bt[-3000:]))
        return "".join(out)

    def log_entries(self):
        try:
            text = self.access_log.read_text(errors="replace")
        except OSError:
            return []
        # NGINX may be mid-way through writing the last line: only whole lines count.
        out = []
        for line in text.split("\n")[:-1]:
            line = line.strip()
            if line:
                out.append(json.loads(line))
        return out

    def log_entry(self, rid, timeout=3.0):
        """The access-log line of request `rid` (waits for it: the log phase runs
        after the response is sent)."""
        def find():
            for e in self.log_entries():
                if e.get("rid") == rid:
                    return e
            return None
        entry = wait_until(find, timeout=timeout)
        assert entry is not None, "no access log line for request id %r in %s" % (rid, self.access_log)
        return entry


def _indent(text, n):
    if not text:
        return ""
    pad = " " * n
    return "\n".join(pad + line if line.strip() else line for line in text.strip("\n").splitlines())


# ---------------------------------------------------------------- requests

def chat_body(model="gpt-4o-mini", max_tokens=100, content="Say hello.", **extra):
    """Compact JSON bytes of a Chat Completions request (max_tokens=None: no max_tokens)."""
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def messages_body(model="claude-sonnet-4-5", max_tokens=100, content="Say hello.", **extra):
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def body_of_length(n, model="gpt-4o-mini", max_tokens=100):
    """A chat request body of exactly n bytes."""
    base = chat_body(model=model, max_tokens=max_tokens, content="")
    pad = n - len(base)
    assert pad >= 0, n
    body = chat_body(model=model, max_tokens=max_tokens, content="x" * pad)
    assert len(body) == n
    return body


def auth(secret, header="authorization"):
    if secret is None:
        return {}
    if header == "authorization":
        return {"authorization": "Bearer " + secret}
    return {header: secret}


def read_to_eof(sock):
    """Everything a raw socket receives until the peer closes."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def post(url, path, body, secret=None, headers=None, key_header="authorization", timeout=30):
    h = {"content-type": "application/json"}
    h.update(auth(secret, key_header))
    h.update(headers or {})
    return httpx.post(url + path, content=body, headers=h, timeout=timeout)


# ---------------------------------------------------------------- Redis MONITOR

class RedisMonitor:
    """Records every command a Redis server executes (MONITOR on a raw socket, read by
    a thread): `commands()` -> [(client, [arg, ...])], client "lua" for the commands a
    script runs, "127.0.0.1:PORT" / "unix:..." for those a connection sends."""

    _LINE = re.compile(r'^\+?\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$')
    _ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')

    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self._buf = b""
        self._lines = []
        self._lock = threading.Lock()
        self._stop = False
        # the +OK of MONITOR: everything after it is a command
        while b"\r\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("MONITOR connection closed")
            self._buf += chunk
        first, self._buf = self._buf.split(b"\r\n", 1)
        assert first == b"+OK", first
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            self._buf += chunk
            *done, self._buf = self._buf.split(b"\r\n")
            with self._lock:
                self._lines.extend(line.decode("utf-8", "replace") for line in done)

    @classmethod
    def _unescape(cls, s):
        return bytes(s, "utf-8").decode("unicode_escape", "replace")

    def commands(self):
        with self._lock:
            lines = list(self._lines)
        out = []
        for line in lines:
            m = self._LINE.match(line)
            if not m:
                continue
            out.append((m.group(1), [self._unescape(a) for a in self._ARG.findall(m.group(2))]))
        return out

    def close(self):
        self._stop = True
        self._thread.join(2)
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def evalsha_keys(args):
    """KEYS of an EVALSHA argv ["EVALSHA", sha, numkeys, key..., arg...]."""
    return args[3:3 + int(args[2])]


def evalsha_argv(args):
    return args[3 + int(args[2]):]


def is_reserve(args):
    """A reserve script call: KEYS counters..., sc:{ORG}:reserved, sc:{ORG}:reserved:deadlines,
    sc:{ORG}:events, sc:{ORG}:config, sc:{ORG}:gone, markers..., [sc:{ORG}:cleared]."""
    if not args or args[0].upper() != "EVALSHA":
        return False
    keys = evalsha_keys(args)
    for i in range(len(keys) - 4):
        if (keys[i].endswith(":reserved") and keys[i + 1].endswith(":reserved:deadlines")
                and keys[i + 2].endswith(":events") and keys[i + 3].endswith(":config")
                and keys[i + 4].endswith(":gone")):
            return True
    return False


def is_settle(args):
    """A settle script call: KEYS counters..., sc:{ORG}:events, sc:{ORG}:reserved:deadlines,
    sc:{ORG}:settlements, sc:{ORG}:reserved, settled, released, gone, low_balance, markers..."""
    if not args or args[0].upper() != "EVALSHA":
        return False
    keys = evalsha_keys(args)
    for i in range(len(keys) - 2):
        if (keys[i].endswith(":events") and keys[i + 1].endswith(":reserved:deadlines")
                and keys[i + 2].endswith(":settlements")):
            return True
    return False


def is_sweep(args):
    """A call of worker 0's sweeper: the sample of the orgs the API created (KEYS
    sc:orgs), and per org the sweep's calls: forgetting old markers (KEYS
    sc:{ORG}:settled, released, gone), reading the reservations past their deadline
    (sc:{ORG}:reserved:deadlines, sc:{ORG}:reserved), giving them back (sc:{ORG}:reserved,
    its deadlines, sc:{ORG}:released, then their counters), and the same for the layout
    before (sc:{ORG}:deadlines and sc:{ORG}:reservations; a record sc:{ORG}:resv:ID)."""
    if not args or args[0].upper() != "EVALSHA":
        return False
    keys = evalsha_keys(args)
    ends = [k.rsplit("}:", 1)[-1] for k in keys]
    return (keys == ["sc:orgs"] or ends == ["settled", "released", "gone"]
            or ends == ["reserved:deadlines", "reserved"]
            or ends[:3] == ["reserved", "reserved:deadlines", "released"]
            or ends == ["deadlines", "reservations"]
            or (len(ends) == 1 and ends[0].startswith("resv:"))
            or (len(ends) >= 2 and ends[0] in ("deadlines", "reservations") and ends[1].startswith("resv:")))


# The first lines of the sweeper's scripts, to tell its SCRIPT LOADs (after a NOSCRIPT).
SWEEP_SCRIPT_OPENINGS = ("-- Forgets what late settlements", "-- The reservations whose deadline has passed",
                         "-- Gives back the reservations of batches", "-- The reservations of the layout before",
                         "-- One reservation record of the layout before",
                         "-- Gives back one reservation record of the layout before",
                         "-- A sample of the orgs the API created")


def is_sweep_script_load(args):
    return (len(args) > 2 and args[0].upper() == "SCRIPT" and args[1].upper() == "LOAD"
            and any(opening in args[2] for opening in SWEEP_SCRIPT_OPENINGS))


def reserve_requests(args):
    """(batch id, [request id, ...]) of a reserve call (ARGV as reserve.lua lays it
    out: C, M, H, G, ttl, batch, prefix length, check_due; 7 per counter; R, decided, 3
    per row; per chain K and K indices; per request id, dry_run, chain, cost, tokens,
    record; the config version)."""
    argv = evalsha_argv(args)
    c, m, h = int(argv[0]), int(argv[1]), int(argv[2])
    batch = argv[5]
    p = 8 + 7 * c
    rows = int(argv[p])
    p += 2 + 3 * rows
    for _ in range(h):
        p += 1 + int(argv[p])
    rids = [argv[p + 6 * j] for j in range(m)]
    assert p + 6 * m + 1 == len(argv), "reserve argv of unexpected length: %r" % args
    return batch, rids


def settle_requests(args):
    """[(request id, batch id, answered), ...] of a settle call (ARGV: C, M, G, prefix
    length; 8 per counter; low_balance, balance index, held index; per request id,
    batch, answered and its corrections, "INDEX DELTA\n" lines; last, whether it was
    sent before)."""
    argv = evalsha_argv(args)
    c, m = int(argv[0]), int(argv[1])
    p = 4 + 8 * c + 3
    out = []
    for _ in range(m):
        out.append((argv[p], argv[p + 1], argv[p + 2] == "1"))
        p += 4
    assert p + 1 == len(argv) and argv[p] in ("0", "1"), "settle argv of unexpected length: %r" % args
    return out


def parse_resp_commands(data):
    """The complete RESP commands (arrays of bulk strings) at the start of `data`
    (bytes a client sent), as lists of str; a truncated tail is left out."""
    out, i = [], 0
    while i < len(data) and data[i:i + 1] == b"*":
        try:
            end = data.index(b"\r\n", i)
            n, i2, cmd = int(data[i + 1:end]), end + 2, []
            for _ in range(n):
                assert data[i2:i2 + 1] == b"$"
                end = data.index(b"\r\n", i2)
                size = int(data[i2 + 1:end])
                start = end + 2
                if start + size + 2 > len(data):
                    return out
                cmd.append(data[start:start + size].decode("utf-8", "replace"))
                i2 = start + size + 2
        except ValueError:
            return out
        out.append(cmd)
        i = i2
    return out


# ------------------------------------------------- issue 4: limits, customers, errors

# spend_cap_customer from a request header, as the tests send it.
CUSTOMER_DIRECTIVE = "spend_cap_customer $http_x_customer_id;"

ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                         429: "rate_limit_error", 503: "api_error"}


def error_envelope(surface, status, code, message, **fields):
    """The exact error body of the module (SPEC section 5), with extra fields
    (scope, window, reset_at) after code."""
    if surface == "openai":
        err = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        err.update(fields)
        return {"error": err}
    err = {"type": ANTHROPIC_ERROR_TYPES[status], "message": message, "code": code}
    err.update(fields)
    return {"type": "error", "error": err}


def set_limits(policy, scope, limits_, ident=None):
    """Adds `limits_` to a scope of `policy` (in place; returns it): scope "key" (ident a
    key id, default k1), "project" (default acme-prod), "org" (default acme) or
    "customer" (customers.default_limits, or the override of customer `ident`)."""
    limits_ = dict(limits_)
    if scope == "key":
        ident = ident or "k1"
        rec = next(k for k in policy["keys"] if k["id"] == ident)
        rec.setdefault("limits", {}).update(limits_)
    elif scope == "project":
        policy["projects"][ident or "acme-prod"].setdefault("limits", {}).update(limits_)
    elif scope == "org":
        policy["orgs"][ident or "acme"].setdefault("limits", {}).update(limits_)
    elif scope == "customer":
        customers = policy.setdefault("customers", {})
        if ident is None:
            customers.setdefault("default_limits", {}).update(limits_)
        else:
            customers.setdefault("overrides", {}).setdefault(ident, {}).update(limits_)
    else:
        raise ValueError(scope)
    return policy


def wait_counters(r, keys, expected, timeout=4.0):
    """Polls until Redis counters `keys` equal `expected` (one int for all, or a dict),
    then asserts it, listing the differences."""
    want = {k: expected for k in keys} if isinstance(expected, int) else dict(expected)
    keys = list(want)
    wait_until(lambda: read_counters(r, keys) == want, timeout=timeout)
    got = read_counters(r, keys)
    assert got == want, "counters differ:\n" + "\n".join(
        "  %s: expected %s, got %s" % (k, want[k], got[k]) for k in keys if got[k] != want[k])


def redis_int(r, key):
    return int_or_zero(r.get(key))


def settled_count(r, org="acme"):
    """How many requests of `org` were settled (sc:{ORG}:settlements, counted by the
    settle script: a resend adds nothing)."""
    return int(r.get("sc:{%s}:settlements" % org) or 0)


def reserved_fields(r, org="acme"):
    """The org's reservations (the hash sc:{ORG}:reserved): per request its release
    lines, per batch "@BATCH" its request ids and "#BATCH" how many still hold."""
    return r.hgetall("sc:{%s}:reserved" % org)


def resv_records(r, org="acme"):
    """The batches of `org` whose reservations are still held (their ids)."""
    return sorted(f[1:] for f in reserved_fields(r, org) if f.startswith("@"))


def held_requests(r, org="acme"):
    """The requests of `org` whose reservations are still held (their ids)."""
    return sorted(f for f in reserved_fields(r, org) if not f.startswith(("@", "#")))


def deadlines_key(org="acme"):
    return "sc:{%s}:reserved:deadlines" % org


def marked(r, kind, member, org="acme"):
    """Whether `member` is in the org's sorted set `kind` (settled, released, gone),
    scored by when it may go (Redis ms)."""
    return r.zscore("sc:{%s}:%s" % (org, kind), member) is not None


def marked_for(r, kind, member, org="acme"):
    """Seconds until `member` may leave sc:{ORG}:KIND (None when absent), by Redis's clock."""
    score = r.zscore("sc:{%s}:%s" % (org, kind), member)
    if score is None:
        return None
    now = r.time()
    return score / 1000.0 - (now[0] + now[1] / 1e6)


def marker_fields(r, prefix, org="acme"):
    """The event markers (fields of the hashes sc:{ORG}:markers:WINDOW) that start with
    `prefix` ("warned:", "reached:"), as "WINDOW FIELD"."""
    out = []
    for key in r.scan_iter("sc:{%s}:markers:*" % org, count=1000):
        window = key.split(":markers:", 1)[1]
        out += ["%s %s" % (window, f) for f in r.hkeys(key) if f.startswith(prefix)]
    return sorted(out)


def request_settled(r, rid, org="acme"):
    """Request `rid` is settled: it is in sc:{ORG}:settled (a request whose reserve was
    not answered) or no reservation of it is held (field RID of sc:{ORG}:reserved)."""
    if marked(r, "settled", rid, org):
        return True
    return not r.hexists("sc:{%s}:reserved" % org, rid)


def wait_request_settled(r, rid, settlements=1, org="acme", answered=True, timeout=4.0):
    """Waits until request `rid` is settled and the org's settlement counter reads
    `settlements` (a test that sent one request: 1). A request whose reserve was
    answered leaves no entry in sc:{ORG}:settled (its reservation going is the proof);
    one whose reserve was not answered (timed out, never sent) leaves one for a day."""
    assert wait_until(lambda: settled_count(r, org) == settlements and request_settled(r, rid, org),
                      timeout=timeout), \
        "request %s of %s not settled: settlements %d (expected %d), held: %s" % (
            rid, org, settled_count(r, org), settlements, held_requests(r, org))
    if answered:
        assert not marked(r, "settled", rid, org), \
            "request %s was answered: no settlement marker expected, found one" % rid
    else:
        left = marked_for(r, "settled", rid, org)
        assert left is not None and 0 < left <= 86400, \
            "settlement marker of %s should go within 1 day: %s s" % (rid, left)


def redis_barrier(ng, timeout=6.0, key_header="authorization", redis_down=False):
    """Returns once Redis has run every command each worker of `ng` sent before
    the call (`key_header`: where its location reads the key): the event a
    negative check waits for (a refused request changed
    nothing: had it queued a write, that write would have run by now).

    A request with a secret nobody holds is answered 401 only after its worker's
    lookup (sc:key:SHA256) came back from Redis, on the one connection the worker
    sends everything on, in order. Such requests are sent until every worker has
    answered one. Lookups only read. Returns the SHA-256 of the secrets used, for a
    test that also waits for them in MONITOR (see monitor_barrier). With
    `redis_down` (Redis unreachable: 503) it only tells that every worker is past
    the log phase of what it answered before."""
    pending = set(ng.worker_pids())
    assert pending, "no worker processes"
    hashes = []
    deadline = time.monotonic() + timeout * WAIT_SCALE
    while pending:
        assert time.monotonic() < deadline, "the barrier did not reach workers %s" % sorted(pending)
        secret = "sk-barrier-%s" % os.urandom(12).hex()
        r = httpx.get(ng.url + "/v1/models", headers=auth(secret, key_header), timeout=30)
        assert r.status_code == (503 if redis_down else 401), "barrier request: %d %s" % (r.status_code, r.text)
        hashes.append(sha256_hex(secret))
        pending.discard(int(ng.log_entry(r.headers["x-test-request-id"], timeout=timeout)["pid"]))
    return hashes


def monitor_barrier(mon, ng, timeout=6.0):
    """redis_barrier, then waits until MONITOR has shown its lookups: every command
    NGINX sent before is in mon.commands() then. Returns the lookups' keys (is_barrier)."""
    hashes = redis_barrier(ng, timeout)
    want = {"sc:key:" + h for h in hashes}
    seen = lambda: want <= {a for _client, args in mon.commands() for a in args}
    assert wait_until(seen, timeout=timeout), "MONITOR did not show the barrier's lookups"
    return want


# The key lookup's script (hgetall.lua, which has no helpers: embedded as it is),
# which the barrier's first lookup on a fresh worker loads.
KEY_LOOKUP_SCRIPT = (REPO / "src/core/redis/scripts/hgetall.lua").read_text()


def is_barrier(args, barrier_keys):
    """A command of the barrier's own (its lookups, the lookup script's load), to
    leave out of a count."""
    if len(args) == 3 and args[0].upper() == "SCRIPT" and args[2] == KEY_LOOKUP_SCRIPT:
        return True
    return any(a in barrier_keys for a in args)


def wait_settled(r, count, org="acme", timeout=5.0):
    """Waits until `count` requests of `org` are settled (sc:{ORG}:settlements) and none
    is still reserved, so that a snapshot taken next is not raced by a settlement."""
    def done():
        return settled_count(r, org) == count and not resv_records(r, org)
    assert wait_until(done, timeout=timeout), "expected %d settled requests of %s, got %d (records left: %s)" % (
        count, org, settled_count(r, org), resv_records(r, org))


def counter_state(r):
    """snapshot() but for the spend_cap_reached event (sc:{ORG}:events) and its marker
    (a field of sc:{ORG}:markers:WINDOW) that a cost cap's refusal may append."""
    return {k: v for k, v in snapshot(r).items() if not k.endswith(":events") and ":markers:" not in k}
