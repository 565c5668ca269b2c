"""spend-cap-relay in the tests: the program (build/spend-cap-relay, or
SPEND_CAP_RELAY), a webhook receiver on loopback (t/webhook_receiver.py), and
Standard Webhooks checks done independently of the relay's own code."""

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from support import PYTHON, REPO, free_port, port_open, wait_until

RELAY_BIN = Path(os.environ.get("SPEND_CAP_RELAY", REPO / "build" / "spend-cap-relay"))
RECEIVER = REPO / "t" / "webhook_receiver.py"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_" + base64.b64encode(b"the secret before the rotation!!").decode()


class Receiver:
    def __init__(self, workdir):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = Path(workdir) / "receiver.log"
        self.proc = subprocess.Popen([PYTHON, str(RECEIVER), "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        assert wait_until(lambda: port_open(self.port), timeout=10), self.log.read_text()

    def received(self, path=None):
        got = httpx.get(self.url + "/__received", timeout=10).json()
        return [r for r in got if path is None or r["path"] == path]

    def delivered(self, path=None):
        return [r for r in self.received(path) if 200 <= r["status"] < 300]

    def plan(self, path, **params):
        httpx.post(self.url + "/__plan", params=dict(path=path, **{k: str(v) for k, v in params.items()}),
                   timeout=10).raise_for_status()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class RelayProcess:
    def __init__(self, workdir, redis_port, endpoints, retry=None, policy=None, name="relay", metrics=True,
                 cluster=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = {"endpoints": endpoints}
        if cluster:
            conf["cluster"] = cluster
        else:
            conf["redis"] = "127.0.0.1:%d" % redis_port
        if policy:
            conf["policy"] = str(policy)
        if retry:
            conf["retry"] = retry
        self.metrics_port = free_port() if metrics else None
        if metrics:
            conf["metrics"] = "127.0.0.1:%d" % self.metrics_port
        self.conf = self.dir / ("%s.yaml" % name)
        self.conf.write_text(yaml.safe_dump(conf, sort_keys=False))
        self.log = self.dir / ("%s.log" % name)
        self.proc = None

    def start(self):
        assert RELAY_BIN.exists(), "%s is not built (scripts/build.sh)" % RELAY_BIN
        self.proc = subprocess.Popen([str(RELAY_BIN), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))
        assert wait_until(lambda: "delivering to" in self.text() or self.proc.poll() is not None, timeout=10), \
            self.text()
        assert self.proc.poll() is None, self.text()
        return self

    def text(self):
        try:
            return self.log.read_text()
        except OSError:
            return ""

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def metrics(self):
        text = httpx.get("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


def check(conf_path):
    """spend-cap-relay --check: (returncode, output)."""
    r = subprocess.run([str(RELAY_BIN), "--check", "-c", str(conf_path)], capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stdout + r.stderr


def signature_ok(entry, secret=SECRET):
    """The Standard Webhooks signature, checked here with hmac (not the relay's code)."""
    key = base64.b64decode(secret[len("whsec_"):])
    h = entry["headers"]
    signed = "%s.%s.%s" % (h["webhook-id"], h["webhook-timestamp"], entry["body"])
    want = base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest()).decode()
    return ("v1," + want) in h["webhook-signature"].split(" ")


def body(entry):
    return json.loads(entry["body"])


def xadd(r, org, n, prefix="e"):
    """n events appended to the org's stream as the scripts do (and its wake-up), the org
    one of the API's (sc:orgs); their ids."""
    r.sadd("sc:orgs", org)
    ids = []
    for i in range(n):
        ids.append(r.xadd("sc:{%s}:events" % org, {"type": "topup", "amount_nanousd": str(i),
                                                   "idempotency_key": "%s%d" % (prefix, i)}))
        r.publish("sc:events", org)
    return ids


@pytest.fixture
def receiver(tmp_path):
    rcv = Receiver(tmp_path)
    yield rcv
    rcv.stop()


@pytest.fixture
def relay_factory(tmp_path, redis_server):
    started = []

    def make(endpoints, start=True, redis_port=None, **kw):
        rel = RelayProcess(tmp_path / ("relay%d" % len(started)), redis_port or redis_server.port, endpoints, **kw)
        started.append(rel)
        return rel.start() if start else rel

    yield make
    for rel in started:
        if rel.proc is not None and rel.proc.poll() is None:
            rel.proc.kill()
            rel.proc.wait(10)
