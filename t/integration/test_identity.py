"""Identity (401) and request (400) errors, surfaces and key sources."""


import pytest

from support import (CHAINS, SECRETS, all_counter_keys, chat_body, default_policy, estimate_nanos, format_usd,
                     messages_body, openai_cost, post, read_counters, wait_until)
from support import redis_barrier

ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                   429: "rate_limit_error", 503: "api_error"}


def assert_error(r, status, code, surface):
    assert r.status_code == status, "expected %d %s, got %d: %s" % (status, code, r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0].strip() == "application/json"
    b = r.json()
    if surface == "openai":
        assert set(b) == {"error"}, b
        err = b["error"]
        assert set(err) == {"message", "type", "param", "code"}, err
        assert err["code"] == code
        assert err["type"] == "invalid_request_error"
        assert err["param"] is None
    else:
        assert set(b) == {"type", "error"} and b["type"] == "error", b
        err = b["error"]
        assert set(err) == {"type", "message", "code"}, err
        assert err["code"] == code
        assert err["type"] == ANTHROPIC_TYPES[status]
    assert isinstance(err["message"], str) and err["message"], err
    return err


def assert_untouched(nginx, redis, fake, key_header="authorization"):
    redis_barrier(nginx, key_header=key_header)  # any (wrong) write would have landed
    assert fake.requests() == [], "a refused request reached the provider"
    assert list(redis.scan_iter("*")) == [], "a refused request wrote to Redis"


SURF = [("openai", "/v1/chat/completions", chat_body()), ("anthropic", "/v1/messages", messages_body())]


@pytest.mark.parametrize("surface,path,body", SURF, ids=["openai", "anthropic"])
@pytest.mark.parametrize("who,code", [
    ("missing", "invalid_api_key"),
    ("unknown", "invalid_api_key"),
    ("k_expired", "api_key_expired"),
    ("k_revoked", "api_key_revoked"),
])
def test_identity_errors(nginx, redis, fake, surface, path, body, who, code):
    secret = {"missing": None, "unknown": "sk-not-a-known-key"}.get(who) or SECRETS.get(who)
    r = post(nginx.url, path, body, secret)
    assert_error(r, 401, code, surface)
    assert nginx.log_entry(r.headers["x-test-request-id"])["decision"] == "reject"  # the caller's, not the gateway's
    if who == "k_expired":
        assert wait_until(lambda: redis.exists("sc:{acme}:events"))
        redis.delete("sc:{acme}:events", "sc:{acme}:expired:k_expired:1577836800")
    assert_untouched(nginx, redis, fake)


def test_expired_key_appends_one_key_expired_event(nginx_factory, redis, fake):
    """SPEC section 7: key_expired, once per key and expiry, from every worker and node."""
    nodes = [nginx_factory(), nginx_factory()]
    for i in range(12):
        r = post(nodes[i % 2].url, "/v1/chat/completions", chat_body(), SECRETS["k_expired"])
        assert_error(r, 401, "api_key_expired", "openai")
    assert wait_until(lambda: redis.exists("sc:{acme}:events"))
    for node in nodes:
        redis_barrier(node)  # any (wrong) second event would have landed
    events = redis.xrange("sc:{acme}:events")
    assert [fields for _, fields in events] == [
        {"type": "key_expired", "id": "k_expired", "expires_at": "2020-01-01T00:00:00Z"}]
    assert 0 < redis.ttl("sc:{acme}:expired:k_expired:1577836800") <= 400 * 86400 + 60
    assert fake.requests() == []


def test_identity_checked_before_the_body(nginx, redis, fake):
    r = post(nginx.url, "/v1/chat/completions", b"{not json", None)
    assert_error(r, 401, "invalid_api_key", "openai")
    assert_untouched(nginx, redis, fake)


def test_key_from_x_api_key_and_bearer(nginx, redis, fake):
    r = post(nginx.url, "/v1/messages", messages_body(), SECRETS["k1"], key_header="x-api-key")
    assert r.status_code == 200, r.text
    assert nginx.log_entry(r.headers["x-test-request-id"])["key_id"] == "k1"
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k_open"])
    assert r.status_code == 200, r.text
    assert nginx.log_entry(r.headers["x-test-request-id"])["key_id"] == "k_open"
    # a key that expires in the future is fine
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k_future"])
    assert r.status_code == 200, r.text
    assert nginx.log_entry(r.headers["x-test-request-id"])["key_id"] == "k_future"
    assert len(fake.requests()) == 3


@pytest.mark.nginx(location_extra="spend_cap_key $http_x_my_key;")
def test_spend_cap_key_directive(nginx, redis, fake):
    r = post(nginx.url, "/v1/chat/completions", chat_body(), None, headers={"x-my-key": SECRETS["k1"]})
    assert r.status_code == 200, r.text
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert e["key_id"] == "k1"
    assert wait_until(lambda: read_counters(redis, all_counter_keys(CHAINS["k1"])) ==
               {k: openai_cost("gpt-4o-mini", 10, 20) for k in all_counter_keys(CHAINS["k1"])})
    # the configured source replaces the default: a bearer token alone is not read
    redis.flushall()
    fake.reset()
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert_error(r, 401, "invalid_api_key", "openai")
    assert_untouched(nginx, redis, fake, key_header="x-my-key")


@pytest.mark.parametrize("surface,path", [("openai", "/v1/chat/completions"), ("anthropic", "/v1/messages")])
@pytest.mark.parametrize("body,code", [
    (b"{not json", "invalid_request"),
    (b"", "invalid_request"),
    (b"[1,2,3]", "invalid_request"),
    (b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":10}', "invalid_request"),
    (b'{"model":42,"max_tokens":10}', "invalid_request"),
    (b'{"model":"gpt-4o-mini","max_tokens":-5}', "invalid_request"),
    (b'{"model":"gpt-9-ultra","max_tokens":10}', "model_not_priced"),
], ids=["not-json", "empty-body", "not-an-object", "no-model", "model-not-string", "negative-max-tokens",
        "unpriced-model"])
def test_bad_requests(nginx, redis, fake, surface, path, body, code):
    r = post(nginx.url, path, body, SECRETS["k1"])
    assert_error(r, 400, code, surface)
    assert nginx.log_entry(r.headers["x-test-request-id"])["decision"] == "reject"
    assert_untouched(nginx, redis, fake)


def _policy_pricing_unknown_as(model):
    p = default_policy()
    p["unknown_model"] = model
    return p


@pytest.mark.nginx(policy=_policy_pricing_unknown_as("gpt-4o-mini"))
def test_unknown_model_priced_as_listed_model(nginx, redis, fake):
    body = chat_body(model="gpt-9-ultra", max_tokens=100)
    r = post(nginx.url, "/v1/chat/completions", body, SECRETS["k1"],
             headers={"x-fake-input-tokens": "1000", "x-fake-output-tokens": "100"})
    assert r.status_code == 200, r.text
    reqs = fake.requests()
    assert len(reqs) == 1 and '"model":"gpt-9-ultra"' in reqs[0]["body"]
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert e["reserved_usd"] == format_usd(estimate_nanos("gpt-4o-mini", len(body), 100))
    cost = openai_cost("gpt-4o-mini", 1000, 100)
    assert e["cost_usd"] == format_usd(cost)
    keys = all_counter_keys(CHAINS["k1"])
    wait_until(lambda: read_counters(redis, keys) == {k: cost for k in keys})
    assert read_counters(redis, keys) == {k: cost for k in keys}


@pytest.mark.nginx(location_extra="spend_cap_surface anthropic;")
def test_surface_forced_anthropic(nginx, redis, fake):
    r = post(nginx.url, "/v1/chat/completions", chat_body(), None)
    assert_error(r, 401, "invalid_api_key", "anthropic")
    r = post(nginx.url, "/v1/chat/completions", b"{not json", SECRETS["k1"])
    assert_error(r, 400, "invalid_request", "anthropic")


@pytest.mark.nginx(location_extra="spend_cap_surface openai;")
def test_surface_forced_openai(nginx, redis, fake):
    r = post(nginx.url, "/v1/messages", messages_body(), None)
    assert_error(r, 401, "invalid_api_key", "openai")


def test_surface_auto_by_path(nginx, redis, fake):
    # auto: a path ending in /v1/messages is Anthropic, anything else OpenAI
    assert_error(post(nginx.url, "/proxy/v1/messages", messages_body(), None), 401, "invalid_api_key", "anthropic")
    assert_error(post(nginx.url, "/v1/embeddings", chat_body(), None), 401, "invalid_api_key", "openai")
    assert_error(post(nginx.url, "/v1/responses", chat_body(), None), 401, "invalid_api_key", "openai")
    assert_untouched(nginx, redis, fake)
