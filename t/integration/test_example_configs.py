"""The example configurations never forward a caller's spend-cap secret (issue 16).

conf/nginx.conf (the Docker image's default) and what scripts/run.sh renders from
it, with and without UPSTREAM_KEY, each run as a real NGINX against the fake
provider, which records every header it receives: the secret a caller sent (in
Authorization, in x-api-key, or both) is in none of them; the provider's own key,
when given, is in the header it reads."""

import subprocess

import httpx
import pytest

from support import (MODULE_LOADED, NGINX_BIN, REPO, chat_body, free_port, messages_body, nginx_env, port_open,
                     sanitizer_reports, wait_until)

ALLOWED = "sk-demo-allowed"  # conf/policy.yaml's demo key
PROVIDER_KEY = "sk-provider-own-key-0123"


class ExampleNginx:
    """conf/nginx.conf rendered by `scripts/run.sh render` into a directory of its own."""

    def __init__(self, tmp_path, redis_port, fake_port, **env):
        self.dir = tmp_path / "run"
        self.port, self.admin_port = free_port(), free_port()
        render_env = dict(nginx_env(tmp_path), RUN_DIR=str(self.dir), MODULE=str(MODULE_LOADED),
                          PORT=str(self.port), ADMIN_PORT=str(self.admin_port), REDIS_PORT=str(redis_port),
                          FAKE_PORT=str(fake_port), POLICY=str(REPO / "conf" / "policy.yaml"))
        render_env.update(env)
        out = subprocess.run([str(REPO / "scripts" / "run.sh"), "render"], env=render_env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        self.conf = self.dir / "conf" / "nginx.conf"
        self.text = self.conf.read_text()
        self.proc = subprocess.Popen(
            [NGINX_BIN, "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "logs" / "error.log"),
             "-g", "daemon off; user root;"], env=nginx_env(self.dir), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: port_open(self.port) or self.proc.poll() is not None), "nginx did not start"
        assert self.proc.poll() is None, (self.dir / "logs" / "error.log").read_text()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        assert not sanitizer_reports(self.dir), sanitizer_reports(self.dir)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)


@pytest.fixture
def example(tmp_path, redis_server, fake):
    started = []

    def make(**env):
        ng = ExampleNginx(tmp_path / str(len(started)), redis_server.port, fake.port, **env)
        started.append(ng)
        return ng
    yield make
    for ng in started:
        ng.stop()


def headers_seen(fake):
    return [(k, v) for q in fake.requests() for k, v in q["headers"].items()]


def send_with_the_secret_everywhere(ng):
    """OpenAI and Anthropic requests carrying the caller's key in each header it may come in."""
    for path, body in (("/v1/chat/completions", chat_body()), ("/v1/messages", messages_body())):
        for headers in ({"authorization": "Bearer " + ALLOWED}, {"x-api-key": ALLOWED},
                        {"authorization": "Bearer " + ALLOWED, "x-api-key": ALLOWED}):
            r = httpx.post(ng.url(path), content=body, headers=dict(headers, **{"content-type": "application/json"}),
                           timeout=30)
            assert r.status_code == 200, (path, headers, r.status_code, r.text)


@pytest.mark.parametrize("env,provider_header", [
    ({}, None),                                                    # conf/nginx.conf as the Docker image has it
    ({"UPSTREAM_KEY": PROVIDER_KEY}, "authorization"),             # run.sh with an OpenAI key
    ({"UPSTREAM_KEY": PROVIDER_KEY, "UPSTREAM_KEY_HEADER": "x-api-key"}, "x-api-key"),  # ... an Anthropic key
], ids=["default", "upstream-key-bearer", "upstream-key-x-api-key"])
def test_the_callers_secret_never_reaches_the_provider(example, fake, redis, env, provider_header):
    ng = example(**env)
    send_with_the_secret_everywhere(ng)
    assert len(fake.requests()) == 6
    leaked = [(k, v) for k, v in headers_seen(fake) if ALLOWED in v]
    assert leaked == [], "the caller's spend-cap secret reached the provider: %s" % leaked
    for q in fake.requests():
        assert ALLOWED not in q["path"]
        got = {k: v for k, v in q["headers"].items() if k in ("authorization", "x-api-key")}
        if provider_header == "authorization":
            assert got == {"authorization": "Bearer " + PROVIDER_KEY}, got
        elif provider_header == "x-api-key":
            assert got == {"x-api-key": PROVIDER_KEY}, got
        else:
            assert got == {}, got


def test_the_example_serves_the_dashboard_beside_the_api(example):
    """conf/nginx.conf's admin listener: the dashboard page, pointed at the API beside it."""
    ng = example()
    page = httpx.get("http://127.0.0.1:%d/spend-cap/ui/" % ng.admin_port, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta name="spend-cap-api" content="/spend-cap/">' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]

