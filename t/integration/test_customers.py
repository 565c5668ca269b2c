"""Customers (spend_cap_customer): default_limits and per-customer overrides
(replacing the defaults field by field), counted within the org of the key that
carries them; no customer, no customer counters; invalid ids refused with 400."""


import pytest

from support import (CHAINS, CUSTOMER_DIRECTIVE, SECRETS, Periods, all_counter_keys, chat_body, counter_key,
                     counter_state, default_policy, error_envelope, fresh_minute, messages_body, openai_cost, post,
                     read_counters, read_events,
                     set_limits, usd_nanos, wait_counters)
from support import redis_barrier

CHAT = "/v1/chat/completions"


def customers_policy():
    pol = default_policy()
    set_limits(pol, "customer", {"monthly_usd": "1", "rpm": 2})
    set_limits(pol, "customer", {"monthly_usd": "5"}, ident="cust_42")
    return pol


def send(ng, customer=None, secret=SECRETS["k_open"], body=None, path=CHAT, headers=None):
    h = dict(headers or {})
    if customer is not None:
        h["x-customer-id"] = customer
    return post(ng.url, path, body or chat_body(), secret, headers=h)


@pytest.mark.nginx(policy=customers_policy(), location_extra=CUSTOMER_DIRECTIVE)
def test_override_replaces_defaults_field_by_field(nginx, redis, fake):
    """cust_42's monthly cap is its override (5 USD), its rpm the default's (2); any
    other customer gets the defaults. The key k_open has no caps of its own, so the
    customer's monthly cap is the tightest and shows in the x-spend-* headers."""
    p = fresh_minute()
    r = send(nginx, "cust_1")
    assert r.status_code == 200, r.text
    assert (r.headers["x-spend-limit-usd"], r.headers["x-spend-scope"]) == ("1.00", "customer:monthly")
    assert r.headers["x-spend-reset"] == p.month_reset
    r = send(nginx, "cust_42")
    assert r.status_code == 200, r.text
    assert (r.headers["x-spend-limit-usd"], r.headers["x-spend-scope"]) == ("5.00", "customer:monthly")
    assert send(nginx, "cust_42").status_code == 200
    r = send(nginx, "cust_42")
    assert r.status_code == 429, "cust_42 keeps the default rpm of 2: %s" % r.text
    assert (r.json()["error"]["scope"], r.json()["error"]["code"]) == ("customer", "rate_limit_exceeded")
    assert send(nginx, "cust_1").status_code == 200  # cust_1's second
    assert len(fake.requests()) == 4


@pytest.mark.nginx(policy=customers_policy(), location_extra=CUSTOMER_DIRECTIVE)
def test_customer_monthly_spend_cap(nginx, redis, fake):
    p = Periods()
    redis.set(counter_key("acme", "spend", "customer", "cust_1", "monthly"), usd_nanos("1"))
    redis.set(counter_key("acme", "spend", "customer", "cust_42", "monthly"), usd_nanos("1"))
    before = counter_state(redis)
    r = send(nginx, "cust_1")
    assert r.status_code == 402, r.text
    assert r.json() == error_envelope("openai", 402, "spend_limit_exceeded",
                                      "customer has reached its monthly spend limit", scope="customer",
                                      window="monthly", reset_at=p.month_reset)
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert (e["decision"], e["blocked_by"], e["customer"]) == ("block", "customer:monthly", "cust_1"), e
    assert fake.requests() == []
    redis_barrier(nginx)
    assert counter_state(redis) == before
    assert read_events(redis, "acme") == [{
        "type": "spend_cap_reached", "scope": "customer", "id": "cust_1", "window": "monthly", "period": p.month,
        "spent": str(usd_nanos("1")), "cap": str(usd_nanos("1"))}]
    # Anthropic envelope
    r = send(nginx, "cust_1", path="/v1/messages", body=messages_body())
    assert r.status_code == 402
    assert r.json()["error"]["type"] == "billing_error"
    assert r.json()["error"]["message"] == "customer has reached its monthly spend limit"
    # cust_42 has room under its 5 USD override
    r = send(nginx, "cust_42")
    assert r.status_code == 200, r.text
    assert r.headers["x-spend-limit-usd"] == "5.00"


@pytest.mark.nginx(policy=customers_policy(), location_extra=CUSTOMER_DIRECTIVE)
def test_customer_counted_within_the_key_org(nginx, redis, fake):
    """The same customer id through keys of two orgs: two sets of counters, each
    under its key's org hash tag."""
    cost = openai_cost("gpt-4o-mini", 10, 20)
    p = Periods()
    r = send(nginx, "cust_42", secret=SECRETS["k1"])
    assert r.status_code == 200, r.text
    assert nginx.log_entry(r.headers["x-test-request-id"])["customer"] == "cust_42"
    acme = dict(CHAINS["k1"], customer="cust_42")
    wait_counters(redis, all_counter_keys(acme, "spend"), cost)
    wait_counters(redis, all_counter_keys(acme, "reqs"), 1)
    wait_counters(redis, all_counter_keys(acme, "tokens"), 30)
    # the names, spelled out
    assert read_counters(redis, ["sc:{acme}:spend:customer:cust_42:m:" + p.month,
                                 "sc:{acme}:spend:customer:cust_42:d:" + p.day,
                                 "sc:{acme}:spend:customer:cust_42:life",
                                 "sc:{acme}:reqs:customer:cust_42:d:" + p.day,
                                 "sc:{acme}:tokens:customer:cust_42:m:" + p.month]) == {
        "sc:{acme}:spend:customer:cust_42:m:" + p.month: cost,
        "sc:{acme}:spend:customer:cust_42:d:" + p.day: cost,
        "sc:{acme}:spend:customer:cust_42:life": cost,
        "sc:{acme}:reqs:customer:cust_42:d:" + p.day: 1,
        "sc:{acme}:tokens:customer:cust_42:m:" + p.month: 30}

    r = send(nginx, "cust_42", secret=SECRETS["kb"])
    assert r.status_code == 200, r.text
    beta = dict(CHAINS["kb"], customer="cust_42")
    wait_counters(redis, all_counter_keys(beta, "spend"), cost)
    wait_counters(redis, all_counter_keys(beta, "reqs"), 1)
    # acme's customer counters did not move
    wait_counters(redis, all_counter_keys(acme, "spend"), cost)
    wait_counters(redis, all_counter_keys(acme, "reqs"), 1)
    customer_keys = sorted(k for k in redis.scan_iter("sc:*:customer:*") if ":rate:" not in k)
    assert all(k.startswith(("sc:{acme}:", "sc:{beta}:")) for k in customer_keys), customer_keys
    assert len(customer_keys) == 2 * (3 + 2 + 2), customer_keys


@pytest.mark.parametrize("headers", [{}, {"x-customer-id": ""}], ids=["no-header", "empty"])
@pytest.mark.nginx(policy=customers_policy(), location_extra=CUSTOMER_DIRECTIVE)
def test_no_customer_no_customer_counters(nginx, redis, fake, headers):
    r = post(nginx.url, CHAT, chat_body(), SECRETS["k1"], headers=headers)
    assert r.status_code == 200, r.text
    # the tightest cap is the key's daily 2 USD, not a customer default
    assert r.headers["x-spend-scope"] == "key:daily"
    wait_counters(redis, all_counter_keys(CHAINS["k1"], "reqs"), 1)
    assert sorted(redis.scan_iter("sc:*customer*")) == []
    e = nginx.log_entry(r.headers["x-test-request-id"])
    assert e["customer"] in ("", "-"), e


def assert_invalid_customer(r, surface):
    """400 invalid_request; the message starts with "invalid customer id" (the module
    may say why after a colon)."""
    assert r.status_code == 400, r.text
    body = r.json()
    err = body["error"]
    message = err.get("message", "")
    assert message == "invalid customer id" or message.startswith("invalid customer id:"), message
    assert body == error_envelope(surface, 400, "invalid_request", message)


@pytest.mark.parametrize("customer", ["cust:42", "c" * 129, "cust{42", "cust}42", "cust 42", "cust\t42"],
                         ids=["colon", "129-bytes", "open-brace", "close-brace", "space", "tab"])
@pytest.mark.nginx(policy=customers_policy(), location_extra=CUSTOMER_DIRECTIVE)
def test_invalid_customer_id(nginx, redis, fake, customer):
    r = send(nginx, customer, secret=SECRETS["k1"])
    assert_invalid_customer(r, "openai")
    assert nginx.log_entry(r.headers["x-test-request-id"])["decision"] == "reject"  # the caller's own error
    redis_barrier(nginx)
    assert fake.requests() == []
    assert list(redis.scan_iter("*")) == [], "a refused request wrote to Redis"


@pytest.mark.nginx(policy=customers_policy(), location_extra=CUSTOMER_DIRECTIVE)
def test_invalid_customer_id_anthropic(nginx, redis, fake):
    r = send(nginx, "a:b", secret=SECRETS["k1"], path="/v1/messages", body=messages_body())
    assert_invalid_customer(r, "anthropic")
    assert fake.requests() == []


@pytest.mark.nginx(policy=customers_policy(), location_extra=CUSTOMER_DIRECTIVE)
def test_customer_id_of_128_bytes_is_valid(nginx, redis, fake):
    cust = "c" * 128
    r = send(nginx, cust, secret=SECRETS["k1"])
    assert r.status_code == 200, r.text
    wait_counters(redis, [counter_key("acme", "reqs", "customer", cust, "monthly")], 1)
