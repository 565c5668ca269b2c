"""Caps hold under concurrency: 300 requests at once, across 2 workers and across
2 NGINX instances sharing one Redis."""

import asyncio
import itertools

import httpx

from support import (CHAINS, SECRETS, all_counter_keys, body_of_length, counter_key, estimate_nanos,
                     deadlines_key, held_requests, openai_cost, read_counters, resv_records, settled_count,
                     usd_nanos, wait_until)

N = 300
BODY_LEN = 400
MAX_TOKENS = 200
FIT = 50  # requests that fit under the cap at their estimate
K1 = CHAINS["k1"]
DAILY_KEY = counter_key("acme", "spend", "key", "k1", "daily")


async def _fire(urls, body, headers, n=N):
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        cycle = itertools.cycle(urls)
        tasks = [client.post(next(cycle) + "/v1/chat/completions", content=body, headers=headers)
                 for _ in range(n)]
        return await asyncio.gather(*tasks, return_exceptions=True)


def run_burst(redis, fake, urls, usage_tokens):
    """Seeds the key's daily counter so that exactly FIT estimates fit under the 2 USD
    cap, fires N concurrent requests and returns (responses, seed, estimate, cost)."""
    body = body_of_length(BODY_LEN, max_tokens=MAX_TOKENS)
    estimate = estimate_nanos("gpt-4o-mini", BODY_LEN, MAX_TOKENS)
    cap = usd_nanos("2")
    seed = cap - FIT * estimate
    redis.set(DAILY_KEY, seed)
    prompt, completion = usage_tokens
    cost = openai_cost("gpt-4o-mini", prompt, completion)
    headers = {"authorization": "Bearer " + SECRETS["k1"], "content-type": "application/json",
               "x-fake-input-tokens": str(prompt), "x-fake-output-tokens": str(completion),
               "x-fake-delay-ms": "100"}
    responses = asyncio.run(_fire(urls, body, headers))
    errors = [r for r in responses if isinstance(r, Exception)]
    assert not errors, "transport errors: %r" % errors[:3]
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}, sorted(set(statuses))
    for r in responses:
        if r.status_code == 402:
            assert r.json()["error"]["code"] == "spend_limit_exceeded"
            assert (r.json()["error"]["scope"], r.json()["error"]["window"]) == ("key", "daily")
    return responses, seed, estimate, cost


def check_settled(redis, fake, allowed, seed, cost):
    keys = all_counter_keys(K1, "spend")
    expected = {k: allowed * cost for k in keys}
    expected[DAILY_KEY] = seed + allowed * cost
    wait_until(lambda: read_counters(redis, keys) == expected, timeout=8)
    got = read_counters(redis, keys)
    assert got == expected, "settled spend differs: %s" % {k: (expected[k], got[k]) for k in keys
                                                            if got[k] != expected[k]}
    assert got[DAILY_KEY] <= usd_nanos("2"), "the cap was exceeded"
    reqs = read_counters(redis, all_counter_keys(K1, "reqs"))
    assert set(reqs.values()) == {allowed}, reqs
    assert len(fake.requests()) == allowed
    # each allowed request settled exactly once (the refused ones reserved nothing), and
    # their reserves were answered: no per-request marker
    assert wait_until(lambda: settled_count(redis) == allowed and not resv_records(redis), timeout=8), \
        (settled_count(redis), resv_records(redis))
    assert settled_count(redis) == allowed
    assert redis.zcard("sc:{acme}:settled") == 0
    assert redis.zcard(deadlines_key()) == 0


def test_300_concurrent_exact_cost_stops_at_the_cap(nginx, redis, fake):
    """Real cost == estimate, so exactly FIT requests fit: a single extra one means a
    race let a request through past the cap."""
    body_tokens = (BODY_LEN, MAX_TOKENS)  # input tokens = body bytes, output = max_tokens
    responses, seed, estimate, cost = run_burst(redis, fake, [nginx.url], body_tokens)
    assert cost == estimate
    allowed = sum(r.status_code == 200 for r in responses)
    assert allowed == FIT, "expected exactly %d allowed, got %d" % (FIT, allowed)
    check_settled(redis, fake, allowed, seed, cost)
    assert int(redis.get(DAILY_KEY)) == usd_nanos("2")


def test_300_concurrent_cheaper_than_estimate(nginx, redis, fake):
    """Real cost < estimate: at least FIT reservations fit, settlement frees room
    for more, the settled spend is allowed x cost and never over the cap."""
    responses, seed, estimate, cost = run_burst(redis, fake, [nginx.url], (100, 50))
    assert cost * 2 < estimate
    allowed = sum(r.status_code == 200 for r in responses)
    assert FIT <= allowed < N, allowed
    check_settled(redis, fake, allowed, seed, cost)


def test_two_nginx_instances_share_the_cap(nginx_factory, redis, fake):
    a = nginx_factory()
    b = nginx_factory()
    body_tokens = (BODY_LEN, MAX_TOKENS)
    responses, seed, estimate, cost = run_burst(redis, fake, [a.url, b.url], body_tokens)
    allowed = sum(r.status_code == 200 for r in responses)
    assert allowed == FIT, "expected exactly %d allowed across both instances, got %d" % (FIT, allowed)
    check_settled(redis, fake, allowed, seed, cost)
    # both instances took half of the traffic; their logs agree with the clients
    log_a, log_b = a.log_entries(), b.log_entries()
    assert len(log_a) == len(log_b) == N // 2
    assert sum(e["status"] == "200" for e in log_a + log_b) == FIT
    assert int(redis.get(DAILY_KEY)) == usd_nanos("2")


def test_300_concurrent_allowed_all_settle_exactly_once(nginx, redis, fake):
    """No settlement is lost or doubled under load: 300 allowed requests at once."""
    chain = CHAINS["k_open"]  # no caps of its own; the project's 20 USD/day is far away
    body = body_of_length(BODY_LEN, max_tokens=MAX_TOKENS)
    cost = openai_cost("gpt-4o-mini", 123, 45)
    headers = {"authorization": "Bearer " + SECRETS["k_open"], "content-type": "application/json",
               "x-fake-input-tokens": "123", "x-fake-output-tokens": "45", "x-fake-delay-ms": "50"}
    responses = asyncio.run(_fire([nginx.url], body, headers))
    errors = [r for r in responses if isinstance(r, Exception)]
    assert not errors, "transport errors: %r" % errors[:3]
    assert [r.status_code for r in responses] == [200] * N
    keys = all_counter_keys(chain, "spend")
    wait_until(lambda: read_counters(redis, keys) == {k: N * cost for k in keys}, timeout=8)
    assert read_counters(redis, keys) == {k: N * cost for k in keys}
    assert set(read_counters(redis, all_counter_keys(chain, "reqs")).values()) == {N}
    assert wait_until(lambda: settled_count(redis) == N and not resv_records(redis), timeout=8), \
        (settled_count(redis), resv_records(redis))
    assert settled_count(redis) == N
    assert resv_records(redis) == [] and held_requests(redis) == []
    assert redis.zcard(deadlines_key()) == 0
    assert redis.zcard("sc:{acme}:settled") == 0
    assert len(fake.requests()) == N
