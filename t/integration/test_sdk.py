"""The official OpenAI and Anthropic Node SDKs against spend-cap: a successful call,
then a 402 surfaced as the SDK's APIError, which the SDK does not retry."""

import json
import os
import shutil
import subprocess

import pytest

from support import REPO, SECRETS, counter_key, usd_nanos, wait_until, free_port
from support import redis_barrier

SDK_DIR = REPO / "t" / "sdk"
NODE = shutil.which("node")


def _require_sdks():
    missing = []
    if NODE is None:
        missing.append("node is not installed")
    for pkg in ("openai", "@anthropic-ai/sdk"):
        if not (SDK_DIR / "node_modules" / pkg / "package.json").exists():
            missing.append("t/sdk/node_modules/%s is missing (run `npm ci` in t/sdk)" % pkg)
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("SDK tests cannot run in CI: " + reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def sdks():
    _require_sdks()


def run_sdk(nginx, sdk, secret, retries="0", headers=None, timeout=60, auth_header=None):
    env = dict(os.environ)
    env.update(SPEND_CAP_URL=nginx.url, SPEND_CAP_SECRET=secret, SPEND_CAP_HEADERS=json.dumps(headers or {}))
    if auth_header:
        env["SPEND_CAP_AUTH_HEADER"] = auth_header
    p = subprocess.run([NODE, "sdk_check.mjs", sdk, retries], cwd=SDK_DIR, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, "node %s failed (rc=%d):\n%s\n%s" % (sdk, p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def log_statuses(nginx, n, timeout=3, redis_down=False):
    """The statuses of the SDK's requests, once a retry (a line more) would have been logged."""
    assert wait_until(lambda: len(nginx.log_entries()) >= n, timeout=timeout)
    redis_barrier(nginx, redis_down=redis_down)  # every worker has logged what it answered before
    return [e["status"] for e in nginx.log_entries() if e["uri"] != "/v1/models"]


def fill_key_daily(redis):
    redis.set(counter_key("acme", "spend", "key", "k1", "daily"), usd_nanos("2"))


def test_openai_sdk(nginx, redis, fake):
    res = run_sdk(nginx, "openai", SECRETS["k1"], headers={"x-fake-input-tokens": "12"})
    assert res["ok"], res
    assert res["object"] == "chat.completion"
    assert res["usage"]["prompt_tokens"] == 12
    assert len(fake.requests()) == 1
    assert fake.requests()[0]["headers"]["authorization"] == "Bearer " + SECRETS["k1"]

    fill_key_daily(redis)
    res = run_sdk(nginx, "openai", SECRETS["k1"], retries="0")
    assert not res["ok"], res
    assert res["status"] == 402
    assert res["code"] == "spend_limit_exceeded"
    assert res["type"] == "invalid_request_error"
    assert res["error"]["message"] == "api key has reached its daily spend limit"
    assert (res["error"]["scope"], res["error"]["window"]) == ("key", "daily")
    assert len(fake.requests()) == 1

    # default retries (2): a 402 is not retried
    res = run_sdk(nginx, "openai", SECRETS["k1"], retries="default")
    assert res["maxRetries"] == 2
    assert res["status"] == 402 and res["code"] == "spend_limit_exceeded"
    assert log_statuses(nginx, 3) == ["200", "402", "402"], "the SDK retried a 402"
    assert len(fake.requests()) == 1


def test_anthropic_sdk(nginx, redis, fake):
    res = run_sdk(nginx, "anthropic", SECRETS["k1"], headers={"x-fake-output-tokens": "7"})
    assert res["ok"], res
    assert res["type"] == "message"
    assert res["usage"]["output_tokens"] == 7
    assert len(fake.requests()) == 1
    h = fake.requests()[0]["headers"]
    assert h.get("x-api-key") == SECRETS["k1"] or h.get("authorization") == "Bearer " + SECRETS["k1"], h

    # the classic Anthropic header, x-api-key, as the SDK sends it when configured so
    res = run_sdk(nginx, "anthropic", SECRETS["k_open"], auth_header="x-api-key")
    assert res["ok"], res
    h = fake.requests()[1]["headers"]
    assert h["x-api-key"] == SECRETS["k_open"] and "authorization" not in h, h
    fake.reset()
    nginx.access_log.write_text("")

    fill_key_daily(redis)
    res = run_sdk(nginx, "anthropic", SECRETS["k1"], retries="0")
    assert not res["ok"], res
    assert res["status"] == 402
    assert res["error"]["type"] == "error"
    assert res["error"]["error"]["type"] == "billing_error"
    assert res["error"]["error"]["code"] == "spend_limit_exceeded"
    assert res["error"]["error"]["message"] == "api key has reached its daily spend limit"
    assert fake.requests() == []

    res = run_sdk(nginx, "anthropic", SECRETS["k1"], retries="default")
    assert res["maxRetries"] == 2
    assert res["status"] == 402 and res["error"]["error"]["type"] == "billing_error"
    assert log_statuses(nginx, 2) == ["402", "402"], "the SDK retried a 402"
    assert fake.requests() == []


@pytest.mark.nginx(redis_addr="127.0.0.1:%d" % free_port())
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_sdk_retries_are_visible(nginx, fake, sdk):
    """Control for the no-retry checks above: the same SDKs with default retries do
    retry a 503 spend_cap_unavailable (Retry-After), and the access log shows it."""
    res = run_sdk(nginx, sdk, SECRETS["k1"], retries="1")
    assert res["status"] == 503, res
    assert res["retryAfter"] is not None
    assert log_statuses(nginx, 2, redis_down=True) == ["503", "503"]
    assert fake.requests() == []


# ---------------------------------------------------------------- streaming through the SDKs

def wait_spend(redis, expected, timeout=4):
    from support import CHAINS, all_counter_keys, read_counters
    keys = all_counter_keys(CHAINS["k1"], "spend")
    wait_until(lambda: read_counters(redis, keys) == {k: expected for k in keys}, timeout=timeout)
    got = read_counters(redis, keys)
    assert got == {k: expected for k in keys}, "expected %d nano-USD everywhere, got %s" % (expected, got)


def test_openai_sdk_streaming_chat_gets_injected_usage(nginx, redis, fake):
    """The SDK streams without stream_options; the gateway adds include_usage, so the
    SDK's last chunk carries the usage and the request settles at its exact cost."""
    from support import openai_cost
    res = run_sdk(nginx, "openai-stream", SECRETS["k1"],
                  headers={"x-fake-input-tokens": "1500", "x-fake-cached-tokens": "1000",
                           "x-fake-output-tokens": "42", "x-fake-reasoning-tokens": "30"})
    assert res["ok"], res
    assert res["content"].startswith("Hello from the fake provider.")
    up = fake.requests()
    assert len(up) == 1
    sent = json.loads(up[0]["body"])
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}, sent
    assert res["usage"] is not None, "the SDK saw no usage chunk: include_usage was not injected"
    assert (res["usage"]["prompt_tokens"], res["usage"]["completion_tokens"]) == (1500, 42)
    wait_spend(redis, openai_cost("gpt-4o-mini", 1500, 42, cached=1000))


def test_openai_sdk_responses_stream(nginx, redis, fake):
    from support import openai_cost
    res = run_sdk(nginx, "openai-responses-stream", SECRETS["k1"],
                  headers={"x-fake-input-tokens": "800", "x-fake-cached-tokens": "300",
                           "x-fake-output-tokens": "64", "x-fake-reasoning-tokens": "16"})
    assert res["ok"], res
    assert res["status"] == "completed" and res["events"][-1] == "response.completed"
    assert res["outputText"] == res["text"]
    u = res["usage"]
    assert (u["input_tokens"], u["input_tokens_details"]["cached_tokens"], u["output_tokens"]) == (800, 300, 64)
    sent = json.loads(fake.requests()[0]["body"])
    assert sent["stream"] is True and "stream_options" not in sent  # not injected for /v1/responses
    wait_spend(redis, openai_cost("gpt-4o-mini", 800, 64, cached=300))


def test_anthropic_sdk_messages_stream(nginx, redis, fake):
    from support import anthropic_cost
    res = run_sdk(nginx, "anthropic-stream", SECRETS["k1"],
                  headers={"x-fake-input-tokens": "250", "x-fake-output-tokens": "75",
                           "x-fake-cache-write-tokens": "1000", "x-fake-cached-tokens": "2000"})
    assert res["ok"], res
    assert res["stopReason"] == "end_turn" and res["text"].startswith("Hello")
    u = res["usage"]
    assert (u["input_tokens"], u["output_tokens"], u["cache_creation_input_tokens"],
            u["cache_read_input_tokens"]) == (250, 75, 1000, 2000)
    sent = json.loads(fake.requests()[0]["body"])
    assert sent["stream"] is True and "stream_options" not in sent
    wait_spend(redis, anthropic_cost("claude-sonnet-4-5", 250, 75, cache_write=1000, cache_read=2000))


def test_openai_and_anthropic_sdks_with_a_key_created_through_the_api(nginx_factory, tmp_path, redis, fake):
    """The management API's key works with the official SDKs, and its cap stops them."""
    token_file = tmp_path / "admin.token"
    token_file.write_text("sdk-admin-token\n")
    os.chmod(token_file, 0o600)
    nginx = nginx_factory(server_extra="location /spend-cap/ { spend_cap_admin %s; }" % token_file)
    import httpx
    r = httpx.post(nginx.url + "/spend-cap/keys", headers={"authorization": "Bearer sdk-admin-token"},
                   json={"project": "acme-prod", "id": "sdk_user", "limits": {"daily_requests": 2}}, timeout=10)
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    res = run_sdk(nginx, "openai", secret, headers={"x-fake-input-tokens": "12"})
    assert res["ok"], res
    assert res["usage"]["prompt_tokens"] == 12
    res = run_sdk(nginx, "anthropic", secret, auth_header="x-api-key")
    assert res["ok"], res
    # its cap of 2 requests a day: the third is the SDK's APIError, not retried
    res = run_sdk(nginx, "openai", secret, retries="default")
    assert not res["ok"] and res["status"] == 402 and res["code"] == "request_limit_exceeded", res
    assert len(fake.requests()) == 2
