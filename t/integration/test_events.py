"""Events in sc:{ORG}:events: spend_cap_warning_threshold_reached once per cap,
fraction and period when a cost counter crosses a warn_at fraction -- even when two
NGINX instances race across it --, spend_cap_reached once per cap and period when a
cost cap first refuses a request; the stream is capped (XADD MAXLEN ~ 10000)."""

import asyncio
import itertools

import httpx
import pytest

from support import (SECRETS, Periods, RedisMonitor, body_of_length, chat_body, counter_key,
                     default_policy, estimate_nanos, events_key, openai_cost, post, read_events, set_limits,
                     marker_fields, settled_count, usd_nanos, wait_settled, wait_until)

WARN = "spend_cap_warning_threshold_reached"
REACHED = "spend_cap_reached"
EVENTS = events_key("acme")

N = 200
BODY_LEN = 400
MAX_TOKENS = 200


def key_only_policy(limits_, warn_at=None):
    """k1 with exactly these limits (project and org keep the default, far larger, caps)."""
    pol = default_policy()
    next(k for k in pol["keys"] if k["id"] == "k1")["limits"] = dict(limits_)
    if warn_at is not None:
        pol["warn_at"] = list(warn_at)
    return pol


async def _fire(urls, body, headers, n=N):
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        cycle = itertools.cycle(urls)
        return await asyncio.gather(*[client.post(next(cycle) + "/v1/chat/completions", content=body,
                                                  headers=headers) for _ in range(n)],
                                    return_exceptions=True)


def burst(urls):
    """N concurrent requests whose real cost equals their estimate (so every counter
    only ever moves by whole estimates); returns (responses, estimate)."""
    body = body_of_length(BODY_LEN, max_tokens=MAX_TOKENS)
    est = estimate_nanos("gpt-4o-mini", BODY_LEN, MAX_TOKENS)
    assert openai_cost("gpt-4o-mini", BODY_LEN, MAX_TOKENS) == est
    headers = {"authorization": "Bearer " + SECRETS["k1"], "content-type": "application/json",
               "x-fake-input-tokens": str(BODY_LEN), "x-fake-output-tokens": str(MAX_TOKENS),
               "x-fake-delay-ms": "50"}
    responses = asyncio.run(_fire(urls, body, headers))
    errors = [r for r in responses if isinstance(r, Exception)]
    assert not errors, "transport errors: %r" % errors[:3]
    return responses, est


def wait_all_settled(redis, n, timeout=10):
    """n requests settled (sc:{acme}:settlements) and no reservation record left."""
    wait_settled(redis, n, timeout=timeout)


def test_warning_once_when_two_instances_race_across_it(nginx_factory, redis, fake):
    """The key's monthly counter is seeded so that the 50th of 200 concurrent reservations
    (across two NGINX instances) crosses 0.5 of the 10 USD cap: exactly one warning
    event, with the counter's value right after the crossing; 0.8 is never reached."""
    pol = key_only_policy({"monthly_usd": "10"}, warn_at=["0.5", "0.8"])
    a = nginx_factory(policy=pol)
    b = nginx_factory(policy=pol)
    cap = usd_nanos("10")
    threshold = cap // 2
    est = estimate_nanos("gpt-4o-mini", BODY_LEN, MAX_TOKENS)
    seed = threshold - 50 * est + 1
    monthly = counter_key("acme", "spend", "key", "k1", "monthly")
    redis.set(monthly, seed)
    p = Periods()

    responses, est = burst([a.url, b.url])
    assert [r.status_code for r in responses] == [200] * N
    wait_all_settled(redis, N)
    assert int(redis.get(monthly)) == seed + N * est
    assert seed + N * est < cap * 8 // 10

    events = read_events(redis, "acme")
    assert events == [{"type": WARN, "scope": "key", "id": "k1", "window": "monthly", "period": p.month,
                       "fraction": "0.5", "spent": str(seed + 50 * est), "cap": str(cap)}], events
    assert int(events[0]["spent"]) >= -(-cap // 2)
    assert redis.type(EVENTS) == "stream"
    markers = marker_fields(redis, "warned:")
    assert len(markers) == 1, markers
    assert redis.ttl("sc:{acme}:markers:" + markers[0].split(" ")[0]) > 0, \
        "the warning marker expires with its counter"


@pytest.mark.parametrize("window", ["daily", "monthly", "lifetime"])
def test_one_request_crossing_two_fractions(nginx_factory, redis, fake, redis_server, window):
    """A cap of 0.0007 USD and a request whose estimate (0.00061395 USD) is over 0.8 of it:
    two events in one reservation; the settlement drops the counter below 0.5 again,
    and the next requests that cross the fractions once more emit nothing (once per
    period). The XADD caps the stream: MAXLEN ~ 10000."""
    cap = 700_000
    ng = nginx_factory(policy=key_only_policy({"%s_usd" % window: "0.0007"}, warn_at=["0.5", "0.8"]))
    body = chat_body(max_tokens=1000)
    est = estimate_nanos("gpt-4o-mini", len(body), 1000)
    cost = openai_cost("gpt-4o-mini", 10, 20)
    assert cap * 8 // 10 <= est <= cap and cost < cap // 2
    p = Periods()
    counter = counter_key("acme", "spend", "key", "k1", window)

    with RedisMonitor(redis_server.port) as mon:
        r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"])
        assert r.status_code == 200, r.text
        assert wait_until(lambda: redis.get(counter) == str(cost))

        def xadds_seen():
            found = [args for _client, args in mon.commands() if args and args[0].upper() == "XADD"]
            return found if len(found) >= 2 else None
        assert wait_until(xadds_seen, timeout=2)
        xadds = [args for _client, args in mon.commands() if args and args[0].upper() == "XADD"]
    assert len(xadds) == 2, xadds
    for args in xadds:
        assert args[1] == EVENTS
        assert [a.upper() for a in args[2:5]] == ["MAXLEN", "~", "10000"], args

    expected = [{"type": WARN, "scope": "key", "id": "k1", "window": window, "period": p.period(window),
                 "fraction": f, "spent": str(est), "cap": str(cap)} for f in ("0.5", "0.8")]
    assert sorted(read_events(redis, "acme"), key=lambda e: e["fraction"]) == expected

    for i in range(2):  # the counter goes from below 0.5 to over 0.8 again, twice
        r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"])
        assert r.status_code == 200, r.text
        assert wait_until(lambda: redis.get(counter) == str((i + 2) * cost))
    assert len(read_events(redis, "acme")) == 2, read_events(redis, "acme")
    markers = marker_fields(redis, "warned:")
    assert len(markers) == 2, markers
    for m in markers:
        ttl = redis.ttl("sc:{acme}:markers:" + m.split(" ")[0])
        assert (ttl == -1) if window == "lifetime" else (ttl > 0), (m, ttl)


def test_reached_once_when_two_instances_race_into_the_cap(nginx_factory, redis, fake):
    """Room for exactly 50 of 200 concurrent requests: 150 refusals, one
    spend_cap_reached event."""
    pol = key_only_policy({"monthly_usd": "10"})
    a = nginx_factory(policy=pol)
    b = nginx_factory(policy=pol)
    cap = usd_nanos("10")
    est = estimate_nanos("gpt-4o-mini", BODY_LEN, MAX_TOKENS)
    redis.set(counter_key("acme", "spend", "key", "k1", "monthly"), cap - 50 * est)
    p = Periods()

    responses, est = burst([a.url, b.url])
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 50 and statuses.count(402) == N - 50, sorted(set(statuses))
    wait_all_settled(redis, 50)

    events = read_events(redis, "acme")
    assert len(events) == 1, events
    ev = events[0]
    spent = int(ev.pop("spent"))
    assert ev == {"type": REACHED, "scope": "key", "id": "k1", "window": "monthly", "period": p.month,
                  "cap": str(cap)}
    assert cap - est < spent <= cap, spent  # refused: spent + estimate > cap
    assert len(marker_fields(redis, "reached:")) == 1


@pytest.mark.nginx(policy=default_policy())
def test_reached_once_per_cap_and_period(nginx, redis, fake):
    """k1's daily (2 USD), monthly (10) and lifetime (40) caps each refuse twice: one
    event each, period "" for lifetime."""
    p = Periods()
    caps = {"daily": usd_nanos("2"), "monthly": usd_nanos("10"), "lifetime": usd_nanos("40")}
    for window, cap in caps.items():
        key = counter_key("acme", "spend", "key", "k1", window)
        redis.set(key, cap)
        for _ in range(2):
            r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
            assert r.status_code == 402 and r.json()["error"]["window"] == window, r.text
        redis.delete(key)
    assert fake.requests() == []
    events = read_events(redis, "acme")
    assert events == [{"type": REACHED, "scope": "key", "id": "k1", "window": w, "period": p.period(w),
                       "spent": str(c), "cap": str(c)} for w, c in caps.items()], events
    assert len(marker_fields(redis, "reached:")) == 3


@pytest.mark.parametrize("limit,status,code", [("daily_requests", 402, "request_limit_exceeded"),
                                               ("monthly_tokens", 402, "token_limit_exceeded"),
                                               ("rpm", 429, "rate_limit_exceeded")])
def test_request_token_and_rate_refusals_are_no_cost_cap_events(nginx_factory, redis, fake, limit, status, code):
    ng = nginx_factory(policy=set_limits(default_policy(), "project", {limit: 0}))
    r = post(ng.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert read_events(redis, "acme") == []


@pytest.mark.nginx(policy=key_only_policy({"monthly_usd": "10"}, warn_at=["0.5", "0.8"]))
def test_no_events_below_the_fractions(nginx, redis, fake):
    for _ in range(3):
        assert post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"]).status_code == 200
    assert wait_until(lambda: settled_count(redis) == 3)
    assert not redis.exists(EVENTS)
    assert marker_fields(redis, "warned:") == []
