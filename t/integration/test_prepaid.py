"""Prepaid orgs: every request also draws its estimate from sc:{ORG}:balance (held in
sc:{ORG}:balance:held until settled), 402 insufficient_credit when the balance is
below the estimate, the balance ends at top-ups minus the real costs; low_balance
events."""

import asyncio
import threading

import httpx
import pytest

from support import (SECRETS, Periods, anthropic_cost, balance_key, chat_body, counter_key,
                     default_policy, error_envelope, estimate_nanos, held_key, messages_body, openai_cost, post,
                     read_events, redis_int, set_limits, snapshot, usd_nanos, wait_request_settled, wait_until)
from support import redis_barrier

ORG = "acme"
BAL = balance_key(ORG)
HELD = held_key(ORG)


def prepaid_policy(**org_extra):
    pol = default_policy()
    pol["orgs"]["acme"]["prepaid"] = True
    pol["orgs"]["acme"].update(org_extra)
    return pol


def wait_balance(redis, expected, held=0, timeout=4.0):
    wait_until(lambda: (redis_int(redis, BAL), redis_int(redis, HELD)) == (expected, held), timeout=timeout)
    got = (redis_int(redis, BAL), redis_int(redis, HELD))
    assert got == (expected, held), "balance, held: expected %s, got %s" % ((expected, held), got)


def assert_insufficient(nginx, redis, fake, r, surface, before, upstream_calls=0):
    assert r.status_code == 402, r.text
    assert "retry-after" not in r.headers
    # no window, no reset_at: a balance does not reset by waiting
    assert r.json() == error_envelope(surface, 402, "insufficient_credit", "insufficient credit balance",
                                      scope="org")
    assert len(fake.requests()) == upstream_calls, "a refused request reached the provider"
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert (e["decision"], e["blocked_by"]) == ("block", "org:balance"), e
    redis_barrier(nginx)
    assert snapshot(redis) == before, "a refused request changed Redis"


@pytest.mark.parametrize("seed", [None, 0], ids=["no-balance-key", "balance-0"])
@pytest.mark.nginx(policy=prepaid_policy())
def test_no_credit_is_refused_in_both_envelopes(nginx, redis, fake, seed):
    if seed is not None:
        redis.set(BAL, seed)
    before = snapshot(redis)
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert_insufficient(nginx, redis, fake, r, "openai", before)
    r = post(nginx.url, "/v1/messages", messages_body(), SECRETS["k1"], key_header="x-api-key")
    assert_insufficient(nginx, redis, fake, r, "anthropic", before)
    assert r.json()["error"]["type"] == "billing_error"


@pytest.mark.nginx(policy=prepaid_policy())
def test_balance_must_cover_the_estimate(nginx, redis, fake):
    """balance >= estimate passes (exactly equal included), one nano-USD less does not."""
    body = chat_body(max_tokens=1000)
    est = estimate_nanos("gpt-4o-mini", len(body), 1000)
    redis.set(BAL, est - 1)
    before = snapshot(redis)
    r = post(nginx.url, "/v1/chat/completions", body, SECRETS["k1"])
    assert_insufficient(nginx, redis, fake, r, "openai", before)
    redis.incrby(BAL, 1)  # a top-up of 1 nano-USD
    r = post(nginx.url, "/v1/chat/completions", body, SECRETS["k1"])
    assert r.status_code == 200, r.text
    wait_balance(redis, est - openai_cost("gpt-4o-mini", 10, 20))


@pytest.mark.nginx(policy=prepaid_policy())
def test_topup_then_balance_is_topup_minus_real_costs(nginx, redis, fake):
    redis.set(BAL, 0)
    assert post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"]).status_code == 402
    topup = usd_nanos("1")
    redis.incrby(BAL, topup)
    costs = []
    calls = [
        ("/v1/chat/completions", chat_body(max_tokens=500), {"x-fake-input-tokens": "1234",
                                                             "x-fake-cached-tokens": "567",
                                                             "x-fake-output-tokens": "89"},
         openai_cost("gpt-4o-mini", 1234, 89, cached=567)),
        ("/v1/messages", messages_body(max_tokens=300), {"x-fake-input-tokens": "100",
                                                         "x-fake-cache-write-tokens": "50",
                                                         "x-fake-cached-tokens": "25",
                                                         "x-fake-output-tokens": "40"},
         anthropic_cost("claude-sonnet-4-5", 100, 40, cache_write=50, cache_read=25)),
        # no usage in a 2xx: settled at the reservation
        ("/v1/chat/completions", chat_body(max_tokens=77), {"x-fake-usage": "none"},
         estimate_nanos("gpt-4o-mini", len(chat_body(max_tokens=77)), 77)),
        # a provider error without usage costs 0
        ("/v1/chat/completions", chat_body(max_tokens=50), {"x-fake-status": "500"}, 0),
        ("/v1/chat/completions", chat_body(model="odd-model", max_tokens=60),
         {"x-fake-input-tokens": "333", "x-fake-output-tokens": "55"}, openai_cost("odd-model", 333, 55)),
    ]
    for path, body, headers, cost in calls:
        r = post(nginx.url, path, body, SECRETS["k1"], headers=headers)
        assert r.status_code in (200, 500), r.text
        costs.append(cost)
    wait_balance(redis, topup - sum(costs))
    assert len(fake.requests()) == len(calls)


@pytest.mark.nginx(policy=prepaid_policy())
def test_concurrent_requests_settle_the_balance_exactly(nginx, redis, fake):
    n = 40
    topup = usd_nanos("0.5")
    redis.set(BAL, topup)
    body = chat_body(max_tokens=200)
    headers = {"authorization": "Bearer " + SECRETS["k_open"], "content-type": "application/json",
               "x-fake-input-tokens": "321", "x-fake-output-tokens": "123", "x-fake-delay-ms": "50"}

    async def fire():
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=n), timeout=30) as c:
            return await asyncio.gather(*[c.post(nginx.url + "/v1/chat/completions", content=body,
                                                 headers=headers) for _ in range(n)])

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * n
    wait_balance(redis, topup - n * openai_cost("gpt-4o-mini", 321, 123), timeout=8)


@pytest.mark.nginx(policy=prepaid_policy())
def test_balance_held_while_in_flight(nginx, redis, fake):
    body = chat_body(max_tokens=2000)
    est = estimate_nanos("gpt-4o-mini", len(body), 2000)
    topup = usd_nanos("1")
    redis.set(BAL, topup)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=post(
        nginx.url, "/v1/chat/completions", body, SECRETS["k1"], headers={"x-fake-hold": "in-flight"})))
    t.start()
    try:
        seen = wait_until(lambda: (redis_int(redis, BAL), redis_int(redis, HELD)) == (topup - est, est))
        assert seen, "in flight: balance %s held %s, expected %s %s" % (
            redis.get(BAL), redis.get(HELD), topup - est, est)
    finally:
        fake.release("in-flight")
        t.join(60)
    assert result["r"].status_code == 200
    wait_balance(redis, topup - openai_cost("gpt-4o-mini", 10, 20))


def test_non_prepaid_org_has_no_balance(nginx_factory, redis, fake):
    ng = nginx_factory(policy=prepaid_policy())
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["kb"])
    assert r.status_code == 200, r.text
    wait_request_settled(redis, r.headers["x-test-request-id"], org="beta")
    assert sorted(redis.scan_iter("sc:*:balance*")) == []


@pytest.mark.nginx(policy=set_limits(prepaid_policy(), "key", {"rpm": 0}))
def test_balance_checked_after_caps_and_before_rates(nginx, redis, fake):
    p = Periods()
    redis.set(counter_key("acme", "spend", "key", "k1", "daily"), usd_nanos("2"))
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 402, r.text
    assert r.json() == error_envelope("openai", 402, "spend_limit_exceeded",
                                      "api key has reached its daily spend limit", scope="key", window="daily",
                                      reset_at=p.day_reset)
    redis.delete(counter_key("acme", "spend", "key", "k1", "daily"))
    before = snapshot(redis)
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert_insufficient(nginx, redis, fake, r, "openai", before)  # not the key's rpm 0


# ------------------------------------------------------------------ low_balance

@pytest.mark.nginx(policy=prepaid_policy(low_balance_usd="1"))
def test_low_balance_event_once_until_topped_up(nginx, redis, fake):
    """Each request costs 0.30003 USD. From 1.5 USD: 1.19997 (no event), 0.89994 (event),
    0.59991 (still below: none); top-up +1 -> 1.59991; 1.29988 (a settlement at or
    above the threshold re-arms it), 0.99985 (a second event)."""
    body = messages_body(max_tokens=20000)
    cost = anthropic_cost("claude-sonnet-4-5", 10, 20000)
    threshold = usd_nanos("1")
    headers = {"x-fake-input-tokens": "10", "x-fake-output-tokens": "20000"}
    balance = usd_nanos("1.5")
    redis.set(BAL, balance)

    def spend():
        nonlocal balance
        r = post(nginx.url, "/v1/messages", body, SECRETS["k_open"], key_header="x-api-key", headers=headers)
        assert r.status_code == 200, r.text
        balance -= cost
        wait_balance(redis, balance)

    def lows():
        # (the settle script that moved the balance wait_balance waited for appends them)
        return read_events(redis, ORG, "low_balance")

    spend()
    assert lows() == []
    spend()
    assert balance == 899_940_000
    assert lows() == [{"type": "low_balance", "balance": str(balance), "threshold": str(threshold)}]
    spend()
    assert len(lows()) == 1, "no second event while still below: %s" % lows()
    redis.incrby(BAL, usd_nanos("1"))
    balance += usd_nanos("1")
    spend()
    assert balance >= threshold
    assert len(lows()) == 1, lows()
    spend()
    assert balance == 999_850_000
    events = lows()
    assert len(events) == 2, events
    assert events[1] == {"type": "low_balance", "balance": str(balance), "threshold": str(threshold)}
    assert redis.type("sc:{acme}:events") == "stream"
