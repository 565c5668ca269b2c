"""Plans: a plan's limits apply to an org field by field where the org sets none; a
paid plan's monthly ceiling rises with the org's cleared spend (sc:{ORG}:cleared,
read by the reserve script) and account age (created_at); an org's own monthly_usd
ignores the plan's.

The key k_open and the project have no caps here, so the org's caps are the
tightest and show in x-spend-limit-usd."""

import datetime as dt

import pytest

from support import (SECRETS, Periods, chat_body, counter_key, default_policy, error_envelope, estimate_nanos,
                     counter_state, format_usd, post, read_events, rfc3339, usd_nanos, utc_now,
                     wait_request_settled)
from support import redis_barrier

CLEARED = "sc:{acme}:cleared"
MONTHLY = counter_key("acme", "spend", "org", "acme", "monthly")
BODY = chat_body(max_tokens=100)
EST = estimate_nanos("gpt-4o-mini", len(BODY), 100)

PLANS = {
    "free": {"limits": {"monthly_usd": "1", "daily_requests": 3}},
    "paid": {"ceilings": [
        {"cleared_usd": 0, "age_days": 0, "monthly_usd": 100},
        {"cleared_usd": 100, "age_days": 14, "monthly_usd": 1000},
        {"cleared_usd": 5000, "age_days": 90, "monthly_usd": 25000},
    ]},
}


def days_ago(n):
    return rfc3339((utc_now() - dt.timedelta(days=n)).replace(microsecond=0))


def plan_policy(org):
    pol = default_policy()
    pol["plans"] = PLANS
    pol["orgs"]["acme"] = org
    del pol["projects"]["acme-prod"]["limits"]
    return pol


def send(ng):
    return post(ng.url, "/v1/chat/completions", BODY, SECRETS["k_open"])


def assert_limit(r, usd, spent=None):
    """The org's monthly cap is the tightest, `usd`; with `spent` (the org's monthly
    counter before the request, when no earlier request may still be settling) the
    remaining amount too."""
    assert r.status_code == 200, r.text
    assert r.headers["x-spend-scope"] == "org:monthly", dict(r.headers)
    assert r.headers["x-spend-limit-usd"] == format_usd(usd_nanos(usd))
    if spent is not None:
        assert r.headers["x-spend-remaining-usd"] == format_usd(usd_nanos(usd) - spent - EST)


def settled(redis, r, settlements=1):
    """Waits for the settlement of response r, the test's `settlements`-th (so that a
    counter set afterwards stays)."""
    wait_request_settled(redis, r.headers["x-test-request-id"], settlements=settlements)


def assert_org_monthly_refused(ng, redis, fake, r, before, cap_usd, upstream_calls=0):
    """Refused by the org's monthly cap of cap_usd: nothing counted, one spend_cap_reached."""
    assert r.status_code == 402, r.text
    assert r.json() == error_envelope("openai", 402, "spend_limit_exceeded",
                                      "account has reached its monthly spend limit", scope="org",
                                      window="monthly", reset_at=Periods().month_reset)
    assert len(fake.requests()) == upstream_calls
    assert ng.log_entry(r.headers["x-test-request-id"])["blocked_by"] == "org:monthly"
    redis_barrier(ng)
    assert counter_state(redis) == before
    reached = read_events(redis, "acme", "spend_cap_reached")
    assert len(reached) == 1 and reached[0]["cap"] == str(usd_nanos(cap_usd)), reached
    assert (reached[0]["scope"], reached[0]["id"], reached[0]["window"]) == ("org", "acme", "monthly")


# ---------------------------------------------------------------- limits plans

@pytest.mark.nginx(policy=plan_policy({"plan": "free", "limits": {"daily_usd": "50"}}))
def test_free_plan_caps_an_org_without_monthly_usd(nginx, redis, fake):
    r = send(nginx)
    assert_limit(r, "1", spent=0)
    settled(redis, r)
    redis.set(MONTHLY, usd_nanos("1") - EST + 1)
    before = counter_state(redis)
    assert_org_monthly_refused(nginx, redis, fake, send(nginx), before, "1", upstream_calls=1)


@pytest.mark.nginx(policy=plan_policy({"plan": "free", "limits": {"monthly_usd": "3"}}))
def test_org_monthly_usd_replaces_the_plan_s_and_other_plan_limits_still_apply(nginx, redis, fake):
    """monthly_usd 3 of the org's own (not the plan's 1); the plan's daily_requests 3,
    which the org does not set, still applies."""
    redis.set(MONTHLY, usd_nanos("1"))  # over the plan's 1 USD, under the org's 3
    assert_limit(send(nginx), "3", spent=usd_nanos("1"))
    assert send(nginx).status_code == 200
    assert send(nginx).status_code == 200
    r = send(nginx)
    assert r.status_code == 402, r.text
    assert r.json()["error"]["code"] == "request_limit_exceeded"
    assert r.json()["error"]["message"] == "account has reached its daily request limit"
    assert len(fake.requests()) == 3


# ---------------------------------------------------------------- ceilings

def paid(age_days, **extra):
    org = {"plan": "paid", "created_at": days_ago(age_days)}
    org.update(extra)
    return plan_policy(org)


@pytest.mark.nginx(policy=paid(20))
def test_ceiling_rises_with_cleared_spend(nginx, redis, fake):
    """20 days old: 100 USD until 100 USD is cleared, then 1000; the 25000 row needs
    90 days, so 5000 cleared still gives 1000."""
    assert_limit(send(nginx), "100", spent=0)
    redis.set(CLEARED, usd_nanos("100") - 1)
    assert_limit(send(nginx), "100")
    redis.set(CLEARED, usd_nanos("100"))
    assert_limit(send(nginx), "1000")
    redis.set(CLEARED, usd_nanos("5000"))
    assert_limit(send(nginx), "1000")


@pytest.mark.nginx(policy=paid(20))
def test_ceiling_refuses_then_allows_once_cleared(nginx, redis, fake):
    redis.set(MONTHLY, usd_nanos("100"))
    before = counter_state(redis)
    assert_org_monthly_refused(nginx, redis, fake, send(nginx), before, "100")
    redis.set(CLEARED, usd_nanos("100"))
    r = send(nginx)
    assert_limit(r, "1000", spent=usd_nanos("100"))
    assert len(fake.requests()) == 1


@pytest.mark.nginx(policy=paid(2))
def test_ceiling_needs_the_account_age_too(nginx, redis, fake):
    """2 days old with 100 USD cleared: the 1000 row needs 14 days."""
    redis.set(CLEARED, usd_nanos("100"))
    r = send(nginx)
    assert_limit(r, "100", spent=0)
    settled(redis, r)
    redis.set(MONTHLY, usd_nanos("100") - EST + 1)
    before = counter_state(redis)
    assert_org_monthly_refused(nginx, redis, fake, send(nginx), before, "100", upstream_calls=1)


@pytest.mark.nginx(policy=paid(100))
def test_last_row_whose_conditions_hold(nginx, redis, fake):
    redis.set(CLEARED, usd_nanos("4999.999999999"))
    assert_limit(send(nginx), "1000")
    redis.set(CLEARED, usd_nanos("5000"))
    assert_limit(send(nginx), "25000")


@pytest.mark.nginx(policy=paid(100, limits={"monthly_usd": "7"}))
def test_org_monthly_usd_ignores_the_ceilings(nginx, redis, fake):
    redis.set(CLEARED, usd_nanos("5000"))
    assert_limit(send(nginx), "7")
