"""More budget shapes (SPEC section 2b) through a real NGINX and a real Redis:
weekly windows, org time zones, per-model limits (caps and rates), allowed_models,
and the 300-request race with a per-model cap as the binding one.

The management API's answers that carry the new shapes (weekly windows, "timezone",
"models", "allowed_models") are read with plain HTTP here (raw_api), not through
admin_support.Api, whose OpenAPI check describes the shapes of section 7 only."""

import asyncio
import datetime as _dt
import json
import re
import threading
import zoneinfo

import httpx
import pytest

from admin_support import PREFIX, TOKEN
from support import (CUSTOMER_DIRECTIVE, SCOPE_WORD, SECRETS, Periods, body_of_length, chat_body, default_policy,
                     error_envelope, estimate_nanos, estimate_tokens, format_usd, fresh_minute, messages_body,
                     openai_cost, post, read_counters, redis_barrier, rfc3339, set_limits, settled_count, snapshot,
                     to_yaml, usd_nanos, utc_now, wait_counters, wait_settled, wait_until)

CUSTOMER = "cust_7"
CHAIN = {"key": "k1", "project": "acme-prod", "org": "acme", "customer": CUSTOMER}
HEADERS = {"x-customer-id": CUSTOMER}
MAX_TOKENS = 100
# The fake provider's default usage: 10 input tokens, 20 output tokens.
USAGE_TOKENS = 30

# Two priced models besides the default ones: gpt-4o matches "gpt-4o*" (as does
# gpt-4o-mini); gpt-4.1-mini does not.
PATTERN = "gpt-4o*"
MATCHING = "gpt-4o-mini"
OTHER = "gpt-4.1-mini"
EXTRA_MODELS = {
    "gpt-4o": {"input": "2.50", "output": "10.00", "max_output_tokens": 16384},
    "gpt-4.1-mini": {"input": "0.40", "output": "1.60", "max_output_tokens": 32768},
}


def policy_with(*scoped_limits, org_extra=None):
    """The default policy with the extra models, `scoped_limits` ((scope, LIMITS), ...)
    added, and `org_extra` fields on org acme."""
    pol = default_policy()
    pol["models"].update({k: dict(v) for k, v in EXTRA_MODELS.items()})
    for scope, lim in scoped_limits:
        set_limits(pol, scope, lim)
    pol["orgs"]["acme"].update(org_extra or {})
    return pol


def cost_of(model, pol, prompt=10, completion=20):
    return openai_cost(model, prompt, completion, policy=pol)


def send(ng, model=MATCHING, headers=None, secret=None, max_tokens=MAX_TOKENS):
    return post(ng.url, "/v1/chat/completions", chat_body(model=model, max_tokens=max_tokens),
                secret or SECRETS["k1"], headers=dict(HEADERS, **(headers or {})))


def raw_api(ng, method, path, body=None):
    """The management API without the OpenAPI check (see the module docstring)."""
    h = {"authorization": "Bearer " + TOKEN}
    content = None
    if body is not None:
        content = body if isinstance(body, (str, bytes)) else json.dumps(body)
        h["content-type"] = "application/json"
    return httpx.request(method, ng.url + PREFIX + path, content=content, headers=h, timeout=10)


def weekly_counters(redis):
    """The weekly counters in Redis (spend, requests, tokens; not the event markers
    sc:{ORG}:markers:w:..., which are internal records)."""
    return sorted(k for k in redis.scan_iter("sc:*:w:*") if re.match(r"^sc:\{[^}]*\}:(spend|reqs|tokens):", k))


def key_name(org, kind, scope, ident, suffix, pattern=None):
    """sc:{ORG}:KIND:SCOPE:ID[:model:PATTERN]:SUFFIX (PATTERN as written: these tests
    use patterns that need no percent-encoding unless they say so)."""
    if pattern is not None:
        ident = "%s:model:%s" % (ident, pattern)
    return "sc:{%s}:%s:%s:%s:%s" % (org, kind, scope, ident, suffix)


# ------------------------------------------------------------------ calendars

class Local:
    """The periods of a zone at a moment (what the module's calendar should give)."""

    def __init__(self, zone="UTC", now=None):
        now = now or utc_now()
        tz = zoneinfo.ZoneInfo(zone)
        local = now.astimezone(tz)
        d = local.date()
        self.day = d.isoformat()
        iso = d.isocalendar()
        self.week = "%04d-W%02d" % (iso[0], iso[1])
        self.month = d.strftime("%Y-%m")

        def utc_of(date):
            return rfc3339(_dt.datetime.combine(date, _dt.time(0), tzinfo=tz).astimezone(_dt.timezone.utc))

        self.day_reset = utc_of(d + _dt.timedelta(days=1))
        self.week_reset = utc_of(d + _dt.timedelta(days=7 - d.weekday()))
        first_next = (d.replace(day=1) + _dt.timedelta(days=32)).replace(day=1)
        self.month_reset = utc_of(first_next)
        self.utc_day = now.strftime("%Y-%m-%d")
        self.utc_minute = now.strftime("%Y-%m-%dT%H:%M")

    def suffix(self, window):
        return {"daily": "d:" + self.day, "weekly": "w:" + self.week, "monthly": "m:" + self.month}[window]

    def reset(self, window):
        return {"daily": self.day_reset, "weekly": self.week_reset, "monthly": self.month_reset}[window]

    def same_periods(self, other):
        return (self.day, self.week, self.month) == (other.day, other.week, other.month)


# ------------------------------------------------------------------ weekly windows

# limit -> (counter kind, error code, message noun)
WEEKLY = {
    "weekly_usd": ("spend", "spend_limit_exceeded", "spend"),
    "weekly_requests": ("reqs", "request_limit_exceeded", "request"),
    "weekly_tokens": ("tokens", "token_limit_exceeded", "token"),
}


def put_limits_path(scope):
    return {"key": "/keys/k1/limits", "project": "/projects/acme-prod/limits", "org": "/orgs/acme/limits",
            "customer": "/orgs/acme/customers/%s/limits" % CUSTOMER}[scope]


@pytest.mark.parametrize("scope,limit,source", [
    ("key", "weekly_usd", "file"),
    ("project", "weekly_requests", "file"),
    ("org", "weekly_tokens", "file"),
    ("customer", "weekly_usd", "file"),
    ("key", "weekly_requests", "api"),
    ("project", "weekly_usd", "api"),
    ("org", "weekly_tokens", "api"),
    ("customer", "weekly_requests", "api"),
])
def test_weekly_cap_is_reached_then_refuses_until_next_monday(admin_factory, redis, fake, scope, limit, source):
    """The weekly counter sits one request's worth below the cap: that request passes
    (reaching the cap exactly at its estimate), settles to its real cost, and the next
    one is refused with window "weekly" and reset_at the next Monday 00:00 UTC.
    Only the capped scope keeps weekly counters."""
    kind, code, noun = WEEKLY[limit]
    pol = policy_with()
    body = chat_body(max_tokens=MAX_TOKENS)
    if kind == "spend":
        cap, need, settled = usd_nanos("1"), estimate_nanos(MATCHING, len(body), MAX_TOKENS, pol), \
            cost_of(MATCHING, pol)
        cap_value = "1"
    elif kind == "reqs":
        cap, need, settled = 5, 1, 1
        cap_value = cap
    else:
        cap, need, settled = 100_000, estimate_tokens(len(body), MAX_TOKENS), USAGE_TOKENS
        cap_value = cap
    if source == "file":
        set_limits(pol, scope, {limit: cap_value})
    api = admin_factory(policy=pol, location_extra=CUSTOMER_DIRECTIVE)
    ng = api.nginx
    if source == "api":
        r = raw_api(ng, "PUT", put_limits_path(scope), {limit: cap_value})
        assert r.status_code == 200, r.text
    p = Local()
    week_key = key_name("acme", kind, scope, CHAIN[scope], p.suffix("weekly"))
    redis.set(week_key, cap - need)

    r = send(ng)
    assert r.status_code == 200, "reaching the weekly cap exactly must pass: %s" % r.text
    wait_counters(redis, [week_key], cap - need + settled)
    wait_settled(redis, 1)

    # weekly counters of the capped scope only (spend, requests and tokens), none elsewhere
    weekly_keys = weekly_counters(redis)
    assert weekly_keys == sorted(key_name("acme", k, scope, CHAIN[scope], p.suffix("weekly"))
                                 for k in ("spend", "reqs", "tokens")), weekly_keys

    before = snapshot(redis)
    r = send(ng)
    assert r.status_code == 402, "expected 402 %s, got %d: %s" % (code, r.status_code, r.text)
    assert "retry-after" not in r.headers
    assert r.json() == error_envelope("openai", 402, code, "%s has reached its weekly %s limit"
                                      % (SCOPE_WORD[scope], noun), scope=scope, window="weekly",
                                      reset_at=p.week_reset)
    e = ng.log_entry(r.headers["x-test-request-id"])
    # a cost cap is named by its window, a request or token cap by its limit (as daily_requests is)
    blocked_by = "%s:weekly" % scope if kind == "spend" else "%s:%s" % (scope, limit)
    assert (e["decision"], e["blocked_by"]) == ("block", blocked_by), e
    assert len(fake.requests()) == 1, "a refused request reached the provider"
    redis_barrier(ng)
    after = snapshot(redis)
    # a refused cost cap may append its spend_cap_reached event and marker; nothing else moves
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert all(k.endswith(":events") or ":markers:" in k for k in changed), changed
    assert p.same_periods(Local()), "the week turned during the test"


def test_weekly_spend_counter_is_the_sum_of_settled_costs_and_usage_lists_it(admin_factory, redis, fake):
    """Three requests of known cost against a weekly_usd of the key: the weekly counter
    holds exactly their settled costs, and USAGE lists a weekly window between daily and
    monthly with the ISO week, the next Monday and the counts. A key without a weekly
    limit lists none and has no weekly counter."""
    pol = policy_with(("key", {"weekly_usd": "3"}))
    api = admin_factory(policy=pol, location_extra=CUSTOMER_DIRECTIVE)
    ng = api.nginx
    p = Local()
    costs = []
    for prompt, completion in ((100, 10), (2000, 300), (7, 1)):
        r = send(ng, headers={"x-fake-input-tokens": str(prompt), "x-fake-output-tokens": str(completion)})
        assert r.status_code == 200, r.text
        costs.append(cost_of(MATCHING, pol, prompt, completion))
    assert send(ng, secret=SECRETS["k_open"]).status_code == 200
    week_key = key_name("acme", "spend", "key", "k1", p.suffix("weekly"))
    wait_counters(redis, [week_key], sum(costs))
    wait_settled(redis, 4)
    assert weekly_counters(redis) == sorted(
        key_name("acme", k, "key", "k1", p.suffix("weekly")) for k in ("spend", "reqs", "tokens"))
    assert redis.get(key_name("acme", "reqs", "key", "k1", p.suffix("weekly"))) == "3"
    assert redis.get(key_name("acme", "tokens", "key", "k1", p.suffix("weekly"))) == str(100 + 10 + 2000 + 300 + 8)

    r = raw_api(ng, "GET", "/keys/k1/usage")
    assert r.status_code == 200, r.text
    windows = r.json()["windows"]
    assert [w["window"] for w in windows] == ["daily", "weekly", "monthly", "lifetime"], windows
    w = windows[1]
    assert (w["period"], w["reset_at"]) == (p.week, p.week_reset), w
    assert (w["spent_nanousd"], w["cap_nanousd"], w["remaining_nanousd"]) == (
        sum(costs), usd_nanos("3"), usd_nanos("3") - sum(costs)), w
    assert (w["requests"], w["tokens"]) == (3, 2418), w
    assert w["spent_usd"] == format_usd(sum(costs)) and w["cap_usd"] == "3.00", w

    r = raw_api(ng, "GET", "/keys/k_open/usage")
    assert [w["window"] for w in r.json()["windows"]] == ["daily", "monthly", "lifetime"], r.text
    assert p.same_periods(Local()), "the week turned during the test"


# ------------------------------------------------------------------ time zones

# +14:00 and -11:00 all year (no daylight saving): at any instant one of them is on
# another date than UTC (Kiritimati from 10:00 UTC on, Pago Pago before 11:00 UTC),
# so the daily period's name shows whether the local date is used.
ZONES = ("Pacific/Kiritimati", "Pacific/Pago_Pago")


def distinct_zone():
    """A zone whose local date is not UTC's now, with a margin of 10 minutes."""
    soon = utc_now() + _dt.timedelta(minutes=10)
    for zone in ZONES:
        if Local(zone).day != Local().day and Local(zone, soon).day != Local(now=soon).day:
            return zone
    return ZONES[0]


def test_org_time_zone_names_local_periods_and_resets_at_local_midnight(nginx_factory, redis, fake):
    """An org of the file in a zone on another date than UTC: its key's daily, weekly and monthly
    counters carry the local date / ISO week / month; a daily block's reset_at is the
    next local midnight in UTC; a weekly block's the local Monday 00:00; rpm counters
    stay on UTC minutes."""
    zone = distinct_zone()
    pol = policy_with(("key", {"weekly_usd": "5", "rpm": 100}), org_extra={"timezone": zone})
    ng = nginx_factory(policy=pol, location_extra=CUSTOMER_DIRECTIVE)
    fresh_minute(margin=20)
    p = Local(zone)
    assert p.day != p.utc_day, (zone, p.day, p.utc_day)
    cost = cost_of(MATCHING, pol)
    r = send(ng)
    assert r.status_code == 200, r.text
    keys = {(scope, w): key_name("acme", "spend", scope, CHAIN[scope], p.suffix(w))
            for scope in ("key", "project", "org", "customer") for w in ("daily", "monthly")}
    keys[("key", "weekly")] = key_name("acme", "spend", "key", "k1", p.suffix("weekly"))
    wait_counters(redis, list(keys.values()), cost)
    wait_settled(redis, 1)
    day_keys = sorted(redis.scan_iter("sc:*:spend:*:d:*"))
    assert day_keys == sorted(keys[(s, "daily")] for s in ("key", "project", "org", "customer")), \
        "daily counters should carry the local date %s (UTC: %s): %s" % (p.day, p.utc_day, day_keys)
    # rpm: the UTC minute, whatever the zone
    rate_keys = sorted(redis.scan_iter("sc:*:rate:*"))
    assert rate_keys == ["sc:{acme}:rate:key:k1:rpm:" + p.utc_minute], (rate_keys, p.utc_minute)

    # the daily cap of the key (2 USD) reached: reset at the next local midnight
    redis.set(keys[("key", "daily")], usd_nanos("2"))
    r = send(ng)
    assert r.status_code == 402, r.text
    assert r.json() == error_envelope("openai", 402, "spend_limit_exceeded",
                                      "api key has reached its daily spend limit", scope="key", window="daily",
                                      reset_at=p.day_reset), (r.json(), p.day, p.day_reset)
    # the weekly one: the local Monday
    redis.set(keys[("key", "daily")], cost)
    redis.set(keys[("key", "weekly")], usd_nanos("5"))
    r = send(ng)
    assert r.status_code == 402, r.text
    assert r.json()["error"]["window"] == "weekly" and r.json()["error"]["reset_at"] == p.week_reset, \
        (r.json(), p.week, p.week_reset)
    # the monthly one: the local first of next month
    redis.set(keys[("key", "weekly")], cost)
    redis.set(keys[("key", "monthly")], usd_nanos("10"))
    r = send(ng)
    assert r.status_code == 402, r.text
    assert r.json()["error"]["window"] == "monthly" and r.json()["error"]["reset_at"] == p.month_reset, \
        (r.json(), p.month, p.month_reset)
    assert p.same_periods(Local(zone)), "a local period turned during the test"


def test_timezone_of_an_api_org_put_read_and_enforced(admin_factory, redis, fake):
    """PUT /orgs/ID takes "timezone" (GET shows it; "UTC" by default, unknown -> 400);
    the org's keys then count in local periods and reset at local midnight."""
    api = admin_factory(policy=policy_with())
    ng = api.nginx
    r = raw_api(ng, "GET", "/orgs/acme")
    assert r.status_code == 200 and r.json()["timezone"] == "UTC", r.text

    r = raw_api(ng, "PUT", "/orgs/berlin", {"timezone": "Europe/Berlin"})
    assert r.status_code == 201, r.text
    assert r.json()["timezone"] == "Europe/Berlin", r.text
    r = raw_api(ng, "GET", "/orgs/berlin")
    assert r.status_code == 200 and r.json()["timezone"] == "Europe/Berlin", r.text

    for bad in ("Mars/Olympus", "", "europe/berlin", "Europe/Berlin ", 5):
        r = raw_api(ng, "PUT", "/orgs/berlin", {"timezone": bad})
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_request", r.text
        assert "timezone" in r.json()["error"]["message"], r.text
    assert raw_api(ng, "GET", "/orgs/berlin").json()["timezone"] == "Europe/Berlin"
    r = raw_api(ng, "PUT", "/orgs/nowhere", {"timezone": "Mars/Olympus"})
    assert r.status_code == 400 and raw_api(ng, "GET", "/orgs/nowhere").status_code == 404, r.text

    # Berlin: a daily block resets at local midnight, in UTC (23:00Z in winter, 22:00Z in summer)
    assert raw_api(ng, "PUT", "/projects/berlin-app", {"org": "berlin"}).status_code == 201
    r = raw_api(ng, "POST", "/keys", {"project": "berlin-app", "limits": {"daily_usd": "0"}})
    assert r.status_code == 201, r.text
    berlin = Local("Europe/Berlin")
    r = send(ng, secret=r.json()["secret"])
    assert r.status_code == 402, r.text
    assert (r.json()["error"]["window"], r.json()["error"]["reset_at"]) == ("daily", berlin.day_reset), r.json()

    # an org on another date than UTC, with a key capped at one request's estimate
    zone = distinct_zone()
    assert raw_api(ng, "PUT", "/orgs/tzco", {"timezone": zone}).status_code == 201
    assert raw_api(ng, "PUT", "/projects/tzco-app", {"org": "tzco"}).status_code == 201
    pol = policy_with()
    body = chat_body(max_tokens=MAX_TOKENS)
    est = estimate_nanos(MATCHING, len(body), MAX_TOKENS, pol)
    cost = cost_of(MATCHING, pol)
    cap = est + cost - 1  # the first passes; once it settled, the second's estimate does not fit
    r = raw_api(ng, "POST", "/keys", {"project": "tzco-app", "id": "tzkey", "limits": {"daily_usd": format_usd(cap)}})
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    p = Local(zone)
    assert p.day != p.utc_day, (zone, p.day, p.utc_day)
    assert send(ng, secret=secret).status_code == 200
    day_key = key_name("tzco", "spend", "key", "tzkey", p.suffix("daily"))
    wait_counters(redis, [day_key], cost)
    wait_settled(redis, 1, org="tzco")
    assert sorted(redis.scan_iter("sc:{tzco}:spend:*:d:*")) == sorted(
        key_name("tzco", "spend", s, i, p.suffix("daily"))
        for s, i in (("key", "tzkey"), ("project", "tzco-app"), ("org", "tzco")))
    r = send(ng, secret=secret)
    assert r.status_code == 402, r.text
    assert r.json() == error_envelope("openai", 402, "spend_limit_exceeded",
                                      "api key has reached its daily spend limit", scope="key", window="daily",
                                      reset_at=p.day_reset), (r.json(), p.day_reset)
    usage = raw_api(ng, "GET", "/keys/tzkey/usage").json()
    daily = usage["windows"][0]
    assert (daily["window"], daily["period"], daily["reset_at"], daily["spent_nanousd"]) == (
        "daily", p.day, p.day_reset, cost), daily
    assert p.same_periods(Local(zone)), "a local period turned during the test"


def test_unknown_timezone_in_the_file_fails_nginx_t_with_file_and_line(nginx_factory):
    pol = policy_with(org_extra={"timezone": "Mars/Olympus"})
    text = to_yaml(pol) + "\n"
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "timezone:" in ln)
    ng = nginx_factory(start=False, policy=text)
    res = ng.test_config()
    ng.log_checked = True
    assert res.returncode != 0, "nginx -t accepted timezone Mars/Olympus:\n%s" % res.stderr
    m = re.search(re.escape(str(ng.policy_path)) + r":(\d+)", res.stderr)
    assert m and int(m.group(1)) == line, "expected %s:%d in: %s" % (ng.policy_path, line, res.stderr)
    assert "Mars/Olympus" in res.stderr, res.stderr


# ------------------------------------------------------------------ per-model limits

def test_per_model_daily_cap_blocks_the_matching_model_only(nginx_factory, redis, fake):
    """models {"gpt-4o*": {daily_usd}} on the key, sized for three settled requests of
    gpt-4o-mini plus one estimate: the fourth gpt-4o-mini request is refused naming the
    pattern, gpt-4.1-mini requests (interleaved) pass and never touch the per-model
    counter, which holds exactly the settled costs of the matching requests."""
    pol0 = policy_with()
    body = chat_body(model=MATCHING, max_tokens=MAX_TOKENS)
    est = estimate_nanos(MATCHING, len(body), MAX_TOKENS, pol0)
    cost = cost_of(MATCHING, pol0)
    other_cost = cost_of(OTHER, pol0)
    cap = 3 * cost + est - 1   # with 2 settled, 2 cost + est fits; with 3, 3 cost + est does not
    pol = policy_with(("key", {"models": {PATTERN: {"daily_usd": format_usd(cap)}}}))
    ng = nginx_factory(policy=pol, location_extra=CUSTOMER_DIRECTIVE)
    p = Local()
    model_key = key_name("acme", "spend", "key", "k1", p.suffix("daily"), PATTERN)
    own_key = key_name("acme", "spend", "key", "k1", p.suffix("daily"))
    for i in range(3):
        r = send(ng, MATCHING)
        assert r.status_code == 200, (i, r.text)
        wait_counters(redis, [model_key], cost * (i + 1))
        r = send(ng, OTHER)
        assert r.status_code == 200, (i, r.text)
        wait_counters(redis, [own_key], (cost + other_cost) * (i + 1))
    wait_settled(redis, 6)
    assert redis_int_or_none(redis, model_key) == 3 * cost
    # the pattern caps the daily window only: its counters are the daily spend, requests, tokens
    assert sorted(redis.scan_iter("sc:*:model:*")) == sorted(
        key_name("acme", k, "key", "k1", p.suffix("daily"), PATTERN) for k in ("spend", "reqs", "tokens"))
    assert redis.get(key_name("acme", "reqs", "key", "k1", p.suffix("daily"), PATTERN)) == "3"
    assert redis.get(key_name("acme", "tokens", "key", "k1", p.suffix("daily"), PATTERN)) == str(3 * USAGE_TOKENS)

    before = {k: v for k, v in snapshot(redis).items() if not k.endswith(":events") and ":markers:" not in k}
    r = send(ng, MATCHING)
    assert r.status_code == 402, r.text
    assert r.json() == error_envelope("openai", 402, "spend_limit_exceeded",
                                      "api key has reached its daily spend limit for gpt-4o*", scope="key",
                                      window="daily", reset_at=p.day_reset, model=PATTERN), r.json()
    e = ng.log_entry(r.headers["x-test-request-id"])
    assert (e["decision"], e["blocked_by"]) == ("block", "key:daily:gpt-4o*"), e
    redis_barrier(ng)
    after = {k: v for k, v in snapshot(redis).items() if not k.endswith(":events") and ":markers:" not in k}
    assert after == before, "a refused request changed the counters"
    assert len(fake.requests()) == 6

    # the other model still passes; the per-model counter does not move
    r = send(ng, OTHER)
    assert r.status_code == 200, r.text
    wait_settled(redis, 7)
    assert redis_int_or_none(redis, model_key) == 3 * cost
    assert redis_int_or_none(redis, own_key) == 3 * cost + 4 * other_cost
    assert p.same_periods(Local()), "the day turned during the test"


def redis_int_or_none(redis, key):
    v = redis.get(key)
    return None if v is None else int(v)


def test_per_model_rpm_answers_429_for_the_pattern_only(nginx_factory, redis, fake):
    pol = policy_with(("key", {"models": {PATTERN: {"rpm": 2}}}))
    ng = nginx_factory(policy=pol, location_extra=CUSTOMER_DIRECTIVE)
    p = fresh_minute(margin=20)
    for i in range(2):
        assert send(ng, MATCHING).status_code == 200, i
    assert send(ng, OTHER).status_code == 200
    wait_settled(redis, 3)
    rate = "sc:{acme}:rate:key:k1:model:%s:rpm:%s" % (PATTERN, p.minute)
    assert sorted(redis.scan_iter("sc:*:rate:*")) == [rate]
    assert redis.get(rate) == "2"

    before = snapshot(redis)
    r = send(ng, MATCHING)
    assert r.status_code == 429, r.text
    assert Periods().minute == p.minute, "the test straddled a minute boundary"
    assert r.json() == error_envelope("openai", 429, "rate_limit_exceeded",
                                      "api key has exceeded its requests per minute limit for gpt-4o*",
                                      scope="key", window="minute", reset_at=p.minute_reset, model=PATTERN), r.json()
    assert 1 <= int(r.headers["retry-after"]) <= 60
    e = ng.log_entry(r.headers["x-test-request-id"])
    assert (e["decision"], e["blocked_by"]) == ("block", "key:rpm:gpt-4o*"), e
    redis_barrier(ng)
    assert snapshot(redis) == before, "a refused request changed Redis"

    # another model is not limited; gpt-4o (also matching) is
    assert send(ng, OTHER).status_code == 200
    r = send(ng, "gpt-4o")
    assert r.status_code == 429 and r.json()["error"]["model"] == PATTERN, r.text
    assert len(fake.requests()) == 4


def test_per_model_limits_through_the_api_usage_and_budgets(admin_factory, redis, fake):
    """PUT /keys/k1/limits with models: a per-model daily_requests cap refuses the
    second matching request (402 request_limit_exceeded naming the pattern); USAGE
    lists the pattern's windows and rates; budgets list its cost cap after the key's own."""
    api = admin_factory(policy=policy_with(), location_extra=CUSTOMER_DIRECTIVE)
    ng = api.nginx
    limits = {"daily_usd": "2", "models": {PATTERN: {"daily_requests": 1, "monthly_usd": "0.5", "rpm": 50}}}
    r = raw_api(ng, "PUT", "/keys/k1/limits", limits)
    assert r.status_code == 200, r.text
    assert r.json()["limits"] == {"daily_usd": "2.00",
                                  "models": {PATTERN: {"daily_requests": 1, "monthly_usd": "0.50", "rpm": 50}}}, \
        r.json()["limits"]
    fresh_minute(margin=20)
    p = Local()
    assert send(ng, MATCHING).status_code == 200
    assert send(ng, OTHER).status_code == 200
    r = send(ng, "gpt-4o")
    assert r.status_code == 402, r.text
    assert r.json() == error_envelope("openai", 402, "request_limit_exceeded",
                                      "api key has reached its daily request limit for gpt-4o*", scope="key",
                                      window="daily", reset_at=p.day_reset, model=PATTERN), r.json()
    wait_settled(redis, 2)
    cost = cost_of(MATCHING, policy_with())

    budgets = raw_api(ng, "GET", "/keys/k1/budgets").json()["budgets"]
    got = [(b["scope"], b["window"], b["model"]) for b in budgets]
    assert got == [("key", "daily", None), ("key", "monthly", PATTERN), ("project", "daily", None),
                   ("project", "monthly", None), ("project", "lifetime", None), ("org", "daily", None),
                   ("org", "monthly", None), ("org", "lifetime", None)], got
    mb = budgets[1]
    assert (mb["cap_nanousd"], mb["spent_nanousd"]) == (usd_nanos("0.5"), cost), mb

    usage = raw_api(ng, "GET", "/keys/k1/usage").json()
    assert [m["model"] for m in usage.get("models", [])] == [PATTERN], usage
    m = usage["models"][0]
    assert [w["window"] for w in m["windows"]] == ["daily", "monthly"], m
    daily, monthly = m["windows"]
    assert (daily["requests"], daily["requests_cap"], daily["spent_nanousd"], daily["cap_nanousd"]) == (
        1, 1, cost, None), daily
    assert (monthly["spent_nanousd"], monthly["cap_nanousd"], monthly["period"]) == (
        cost, usd_nanos("0.5"), p.month), monthly
    assert m["rates"]["rpm"]["cap"] == 50 and m["rates"]["rpm"]["used"] == 1 and m["rates"]["tpm"] is None, m

    # bad patterns are 400 naming the field; the limits stay as they were
    for bad in ({"models": {"": {"daily_usd": 1}}}, {"models": {"gpt 4o": {"daily_usd": 1}}},
                {"models": {PATTERN: {"models": {"x": {"rpm": 1}}}}}, {"models": {PATTERN: {"hourly_usd": 1}}}):
        r = raw_api(ng, "PUT", "/keys/k1/limits", bad)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_request" and "models" in r.json()["error"]["message"], r.text
    assert raw_api(ng, "GET", "/keys/k1").json()["limits"]["models"] == {
        PATTERN: {"daily_requests": 1, "monthly_usd": "0.50", "rpm": 50}}


def test_per_model_pattern_is_percent_encoded_in_counter_keys(nginx_factory, redis, fake):
    """A pattern with ':' (fine-tuned model names) sits in the key as %3A, so that it
    cannot be mistaken for the next part of the key."""
    model = "ft:gpt-4o-mini:acme:v1"
    pattern = "ft:gpt-4o-mini:*"
    pol = policy_with(("key", {"models": {pattern: {"daily_usd": "1"}}}))
    pol["models"][model] = dict(pol["models"][MATCHING])
    text = to_yaml(pol) + "\n"
    # to_yaml leaves mapping keys bare: quote the two that hold ':'
    text = text.replace("  %s:\n" % model, "  %s:\n" % json.dumps(model))
    text = text.replace("%s:\n" % pattern, "%s:\n" % json.dumps(pattern))
    ng = nginx_factory(policy=text)
    p = Local()
    assert send(ng, model).status_code == 200
    cost = cost_of(MATCHING, pol)
    encoded = key_name("acme", "spend", "key", "k1", p.suffix("daily"), "ft%3Agpt-4o-mini%3A*")
    wait_counters(redis, [encoded], cost)
    assert sorted(redis.scan_iter("sc:*:model:*")) == sorted(
        key_name("acme", k, "key", "k1", p.suffix("daily"), "ft%3Agpt-4o-mini%3A*")
        for k in ("spend", "reqs", "tokens"))
    # gpt-4o-mini itself does not match the pattern
    assert send(ng, MATCHING).status_code == 200
    wait_settled(redis, 2)
    assert int(redis.get(encoded)) == cost


# ------------------------------------------------------------------ allowed_models

def forbidden_envelope(surface, model, scope):
    message = "model %s is not allowed for this %s" % (model, SCOPE_WORD[scope])
    if surface == "openai":
        return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                          "code": "model_not_allowed"}}
    return {"type": "error", "error": {"type": "permission_error", "message": message, "code": "model_not_allowed"}}


def assert_forbidden(ng, redis, fake, r, surface, model, scope, before):
    assert r.status_code == 403, "expected 403 model_not_allowed, got %d: %s" % (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0].strip() == "application/json"
    assert r.json() == forbidden_envelope(surface, model, scope), r.json()
    e = ng.log_entry(r.headers["x-test-request-id"])
    assert e["decision"] == "block", e
    assert e["blocked_by"] == "%s:allowed_models" % scope, e
    assert fake.requests() == [], "a refused request reached the provider"
    redis_barrier(ng)
    assert snapshot(redis) == before, "a refused request changed Redis"


@pytest.mark.parametrize("scope", ["key", "project", "org", "customer"])
def test_allowed_models_refuses_other_models_on_both_surfaces(nginx_factory, redis, fake, scope):
    """allowed_models ["gpt-4o*"] at one scope: claude-sonnet-4-5 on /v1/messages and
    gpt-4.1-mini on /v1/chat/completions get 403 model_not_allowed in their surface's
    envelope, nothing reserved, the provider never called; gpt-4o-mini passes."""
    ng = nginx_factory(policy=policy_with((scope, {"allowed_models": [PATTERN]})), location_extra=CUSTOMER_DIRECTIVE)
    before = snapshot(redis)
    r = post(ng.url, "/v1/messages", messages_body(model="claude-sonnet-4-5"), SECRETS["k1"],
             key_header="x-api-key", headers=HEADERS)
    assert_forbidden(ng, redis, fake, r, "anthropic", "claude-sonnet-4-5", scope, before)
    r = send(ng, OTHER)
    assert_forbidden(ng, redis, fake, r, "openai", OTHER, scope, before)
    r = send(ng, MATCHING)
    assert r.status_code == 200, r.text


def test_allowed_models_every_listing_scope_must_match(nginx_factory, redis, fake):
    """The key allows "gpt-*", the org only "gpt-4o*": gpt-4.1-mini passes the key's
    list but not the org's (the refusal names the org); gpt-4o-mini passes both;
    claude fails the key's first."""
    pol = policy_with(("key", {"allowed_models": ["gpt-*"]}), ("org", {"allowed_models": [PATTERN, "odd-model"]}))
    ng = nginx_factory(policy=pol)
    before = snapshot(redis)
    assert_forbidden(ng, redis, fake, send(ng, OTHER), "openai", OTHER, "org", before)
    assert_forbidden(ng, redis, fake, send(ng, "claude-sonnet-4-5"), "openai", "claude-sonnet-4-5", "key", before)
    assert_forbidden(ng, redis, fake, send(ng, "odd-model"), "openai", "odd-model", "key", before)
    assert send(ng, MATCHING).status_code == 200
    assert send(ng, "gpt-4o").status_code == 200


def test_allowed_models_through_the_api_and_bad_patterns(admin_factory, redis, fake):
    api = admin_factory(policy=policy_with())
    ng = api.nginx
    assert send(ng, MATCHING).status_code == 200
    wait_settled(redis, 1)
    fake.reset()
    r = raw_api(ng, "PUT", "/keys/k1/limits", {"monthly_usd": "10", "allowed_models": ["claude-*"]})
    assert r.status_code == 200, r.text
    assert r.json()["limits"] == {"monthly_usd": "10.00", "allowed_models": ["claude-*"]}, r.json()
    before = snapshot(redis)
    assert_forbidden(ng, redis, fake, send(ng, MATCHING), "openai", MATCHING, "key", before)
    r = post(ng.url, "/v1/messages", messages_body(), SECRETS["k1"], key_header="x-api-key")
    assert r.status_code == 200, r.text

    for bad in ([""], ["gpt 4o"], ["gpt-4o\t"], "gpt-4o", [5], ["é"], ["x" * 129]):
        r = raw_api(ng, "PUT", "/keys/k1/limits", {"allowed_models": bad})
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_request", r.text
        assert "allowed_models" in r.json()["error"]["message"], r.text
    # still the limits put before
    assert raw_api(ng, "GET", "/keys/k1").json()["limits"]["allowed_models"] == ["claude-*"]
    # projects and orgs take it too
    r = raw_api(ng, "PUT", "/projects/acme-prod/limits", {"allowed_models": [""]})
    assert r.status_code == 400, r.text
    r = raw_api(ng, "PUT", "/orgs/acme/limits", {"allowed_models": ["claude-sonnet-*"]})
    assert r.status_code == 200, r.text
    r = post(ng.url, "/v1/messages", messages_body(), SECRETS["k1"], key_header="x-api-key")
    assert r.status_code == 200, r.text
    r = raw_api(ng, "PUT", "/orgs/acme/limits", {"allowed_models": ["claude-opus-*"]})
    assert r.status_code == 200, r.text
    fake.reset()
    before = snapshot(redis)
    r = post(ng.url, "/v1/messages", messages_body(), SECRETS["k1"], key_header="x-api-key")
    assert_forbidden(ng, redis, fake, r, "anthropic", "claude-sonnet-4-5", "org", before)


@pytest.mark.parametrize("limits_yaml", [
    '{ allowed_models: [""] }',
    '{ allowed_models: ["gpt 4o"] }',
    '{ allowed_models: gpt-4o }',
    '{ models: { "gpt 4o": { daily_usd: 1 } } }',
    '{ models: { "": { daily_usd: 1 } } }',
    '{ models: { "gpt-4o*": { hourly_usd: 1 } } }',
    '{ models: { "gpt-4o*": { allowed_models: [gpt-4o] } } }',
])
def test_bad_model_patterns_in_the_file_fail_nginx_t(nginx_factory, limits_yaml):
    pol = policy_with()
    del next(k for k in pol["keys"] if k["id"] == "k1")["limits"]
    lines = (to_yaml(pol) + "\n").splitlines()
    at = lines.index("  - id: k1")
    lines.insert(at + 1, "    limits: " + limits_yaml)
    text = "\n".join(lines) + "\n"
    line = at + 2
    ng = nginx_factory(start=False, policy=text)
    res = ng.test_config()
    ng.log_checked = True
    assert res.returncode != 0, "nginx -t accepted %s:\n%s" % (limits_yaml, res.stderr)
    m = re.search(re.escape(str(ng.policy_path)) + r":(\d+):? *(\S[^\n]*)", res.stderr)
    assert m, "stderr does not name %s:LINE: %s" % (ng.policy_path, res.stderr)
    assert int(m.group(1)) == line, "expected line %d: %s" % (line, res.stderr)


# ------------------------------------------------------------------ the race

N = 300
BODY_LEN = 400
RACE_MAX_TOKENS = 200
FIT = 50


async def _fire(url, body, headers, n=N):
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(*[client.post(url + "/v1/chat/completions", content=body, headers=headers)
                                      for _ in range(n)], return_exceptions=True)


@pytest.mark.parametrize("usage", ["exact", "cheaper"])
def test_300_concurrent_against_a_per_model_daily_cap(nginx_factory, redis, fake, usage):
    """The per-model daily cap (1 USD for gpt-4o*) is the binding one: its counter is
    seeded so that FIT estimates fit. With real cost = estimate exactly FIT pass; with
    a cheaper real cost at least FIT pass. Either way the counter never exceeds the
    cap and ends at seed + the settled costs."""
    pol = policy_with(("key", {"models": {PATTERN: {"daily_usd": "1"}}}))
    ng = nginx_factory(policy=pol)
    p = Local()
    model_key = key_name("acme", "spend", "key", "k1", p.suffix("daily"), PATTERN)
    own_key = key_name("acme", "spend", "key", "k1", p.suffix("daily"))
    body = body_of_length(BODY_LEN, max_tokens=RACE_MAX_TOKENS)
    est = estimate_nanos(MATCHING, BODY_LEN, RACE_MAX_TOKENS, pol)
    prompt, completion = (BODY_LEN, RACE_MAX_TOKENS) if usage == "exact" else (100, 50)
    cost = cost_of(MATCHING, pol, prompt, completion)
    assert (cost == est) if usage == "exact" else (cost * 2 < est)
    cap = usd_nanos("1")
    seed = cap - FIT * est
    redis.set(model_key, seed)
    headers = {"authorization": "Bearer " + SECRETS["k1"], "content-type": "application/json",
               "x-fake-input-tokens": str(prompt), "x-fake-output-tokens": str(completion), "x-fake-delay-ms": "100"}

    # sample the counter while the burst runs: it must never be over the cap
    samples, stop = [], threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append(int(redis.get(model_key) or 0))

    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    try:
        responses = asyncio.run(_fire(ng.url, body, headers))
    finally:
        stop.set()
        t.join(10)
    errors = [r for r in responses if isinstance(r, Exception)]
    assert not errors, "transport errors: %r" % errors[:3]
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}, sorted(set(statuses))
    for r in responses:
        if r.status_code == 402:
            assert r.json() == error_envelope("openai", 402, "spend_limit_exceeded",
                                              "api key has reached its daily spend limit for gpt-4o*", scope="key",
                                              window="daily", reset_at=p.day_reset, model=PATTERN), r.json()
    allowed = statuses.count(200)
    if usage == "exact":
        assert allowed == FIT, "expected exactly %d allowed, got %d" % (FIT, allowed)
    else:
        assert FIT <= allowed < N, allowed
    assert samples and max(samples) <= cap, "the per-model counter went over the cap: %d > %d" % (max(samples), cap)

    assert wait_until(lambda: settled_count(redis) == allowed, timeout=8), (settled_count(redis), allowed)
    wait_settled(redis, allowed, timeout=8)
    want = {model_key: seed + allowed * cost, own_key: allowed * cost}
    wait_counters(redis, list(want), want, timeout=8)
    got = read_counters(redis, [model_key])[model_key]
    assert got <= cap, "the per-model cap was exceeded: %d > %d" % (got, cap)
    if usage == "exact":
        assert got == cap
    assert redis.get(key_name("acme", "reqs", "key", "k1", p.suffix("daily"), PATTERN)) == str(allowed)
    assert len(fake.requests()) == allowed
    assert p.same_periods(Local()), "the day turned during the test"
