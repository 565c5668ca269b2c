"""spend_cap_dry_run on: nothing is refused by a cap; every counter, the balance and
the rates are counted and settled as if allowed, even past the caps; the decision
is dry_run_block and error.log says what would have been refused. Identity and
body errors are still answered."""

import pytest

from support import (CHAINS, SECRETS, all_counter_keys, balance_key, chat_body, counter_key, default_policy,
                     fresh_minute, held_key, messages_body, openai_cost, post, rate_key, redis_int, set_limits,
                     usd_nanos, wait_counters, wait_settled, wait_until)

DRY = "spend_cap_dry_run on;"
K1 = CHAINS["k1"]
COST = openai_cost("gpt-4o-mini", 10, 20)


def warn_line(ng, rid, blocked_by, status_code):
    """The [warn] line of the dry-run decision of request rid in error.log."""
    text = "spend_cap: dry run: request %s would have been blocked by %s (%s)" % (rid, blocked_by, status_code)

    def find():
        return [line for line in ng.error_text().splitlines() if text in line]
    lines = wait_until(find, timeout=3)
    assert lines, "no dry-run line %r in error.log:\n%s" % (text, ng.error_text()[-3000:])
    assert len(lines) == 1 and "[warn]" in lines[0], lines
    return lines[0]


def assert_dry_run_block(ng, fake, r, blocked_by, status_code, upstream_calls=1):
    assert r.status_code == 200, "dry run must not refuse: %s" % r.text
    assert len(fake.requests()) == upstream_calls, "the provider must see the request"
    rid = r.headers["x-test-request-id"]
    e = ng.log_entry(rid)
    assert (e["decision"], e["blocked_by"]) == ("dry_run_block", blocked_by), e
    warn_line(ng, rid, blocked_by, status_code)


@pytest.mark.nginx(location_extra=DRY)
def test_over_a_cost_cap_is_forwarded_counted_and_settled(nginx, redis, fake):
    daily = counter_key("acme", "spend", "key", "k1", "daily")
    cap = usd_nanos("2")
    redis.set(daily, cap)  # the key's daily cap is reached
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert_dry_run_block(nginx, fake, r, "key:daily", "402 spend_limit_exceeded")
    assert r.json()["object"] == "chat.completion"
    expected = {k: COST for k in all_counter_keys(K1, "spend")}
    expected[daily] = cap + COST  # past the cap
    wait_counters(redis, all_counter_keys(K1, "spend"), expected)
    wait_counters(redis, all_counter_keys(K1, "reqs"), 1)
    wait_counters(redis, all_counter_keys(K1, "tokens"), 30)
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert e["settled_from"] == "usage"


@pytest.mark.nginx(location_extra=DRY)
def test_allowed_request_is_allow(nginx, redis, fake):
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 200
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert (e["decision"], e["blocked_by"]) in (("allow", "-"), ("allow", "")), e
    wait_settled(redis, 1)
    assert "dry run" not in nginx.error_text()


@pytest.mark.nginx(location_extra=DRY, policy=set_limits(default_policy(), "key", {"rpm": 1}))
def test_over_rpm(nginx, redis, fake):
    p = fresh_minute()
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert nginx.log_entry(r.headers["x-test-request-id"])["decision"] == "allow"
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert_dry_run_block(nginx, fake, r, "key:rpm", "429 rate_limit_exceeded", upstream_calls=2)
    assert "retry-after" not in r.headers
    assert redis.get(rate_key("acme", "key", "k1", "rpm", p)) == "2"


@pytest.mark.nginx(location_extra=DRY, policy=set_limits(default_policy(), "project", {"monthly_requests": 0}))
def test_over_a_request_cap(nginx, redis, fake):
    r = post(nginx.url, "/v1/messages", messages_body(), SECRETS["k1"], key_header="x-api-key")
    assert_dry_run_block(nginx, fake, r, "project:monthly_requests", "402 request_limit_exceeded")
    wait_counters(redis, all_counter_keys(K1, "reqs"), 1)


def _prepaid():
    pol = default_policy()
    pol["orgs"]["acme"]["prepaid"] = True
    return pol


@pytest.mark.nginx(location_extra=DRY, policy=_prepaid())
def test_without_credit_draws_the_balance_below_zero(nginx, redis, fake):
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert_dry_run_block(nginx, fake, r, "org:balance", "402 insufficient_credit")
    wait_until(lambda: redis_int(redis, balance_key("acme")) == -COST)
    assert (redis_int(redis, balance_key("acme")), redis_int(redis, held_key("acme"))) == (-COST, 0)


@pytest.mark.nginx(location_extra=DRY)
def test_identity_and_body_errors_are_still_answered(nginx, redis, fake):
    r = post(nginx.url, "/v1/chat/completions", chat_body(), "sk-unknown")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k_revoked"])
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_revoked"
    r = post(nginx.url, "/v1/chat/completions", b"{not json", SECRETS["k1"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    r = post(nginx.url, "/v1/chat/completions", chat_body(model="gpt-9"), SECRETS["k1"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_priced"
    assert fake.requests() == []
    assert list(redis.scan_iter("*")) == []
