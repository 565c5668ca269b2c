"""What the dashboard reads (SPEC section 11) through a real NGINX and a real Redis:
GET .../usage/daily of keys (and /keys/self), projects, orgs and customers, as JSON
and CSV; GET /orgs; GET /projects?org=. Every answer is checked against
docs/openapi.yaml (admin_support.Api)."""

import datetime as _dt

import httpx
import pytest

from admin_support import PREFIX, chat
from support import (CUSTOMER_DIRECTIVE, SECRETS, Periods, counter_key, default_policy, openai_cost, read_counters,
                     sha256_hex, wait_counters)

DEV_SECRET = "sk-test-dev-4a11"


def two_projects_policy():
    """acme with two file projects: acme-prod (key k1) and acme-dev (key kd)."""
    pol = default_policy()
    pol["projects"]["acme-dev"] = {"org": "acme"}
    pol["keys"].append({"id": "kd", "sha256": sha256_hex(DEV_SECRET), "project": "acme-dev"})
    return pol


@pytest.fixture
def daily_api(admin_factory):
    return admin_factory(policy=two_projects_policy(), location_extra=CUSTOMER_DIRECTIVE)


def dates_back(today, n):
    """The n dates ending with `today` ("YYYY-MM-DD"), oldest first."""
    last = _dt.date.fromisoformat(today)
    return [(last - _dt.timedelta(days=back)).isoformat() for back in range(n - 1, -1, -1)]


def day_key(org, kind, scope, ident, date):
    return "sc:{%s}:%s:%s:%s:d:%s" % (org, kind, scope, ident, date)


def redis_days(redis, org, scope, ident, dates):
    """[(date, spend, requests, tokens)] as Redis holds them (none: 0)."""
    out = []
    for date in dates:
        keys = [day_key(org, kind, scope, ident, date) for kind in ("spend", "reqs", "tokens")]
        values = read_counters(redis, keys)
        out.append((date,) + tuple(values[k] for k in keys))
    return out


def answer_days(body):
    return [(d["date"], d["spent_nanousd"], d["requests"], d["tokens"]) for d in body["days"]]


def send(api, secret, customer, prompt, completion):
    r = chat(api.nginx, secret, **{"x-customer-id": customer, "x-fake-input-tokens": str(prompt),
                                   "x-fake-output-tokens": str(completion)})
    assert r.status_code == 200, r.text
    return openai_cost("gpt-4o-mini", prompt=prompt, completion=completion)


def test_daily_usage_of_a_key_project_org_and_customer_is_what_the_requests_cost(daily_api, redis):
    api = daily_api
    prod = send(api, SECRETS["k1"], "cust_1", 1000, 200)
    dev = send(api, DEV_SECRET, "cust_1", 500, 50)
    p = Periods()
    # settled (the counters hold the reservation until then)
    wait_counters(redis, [counter_key("acme", "spend", "org", "acme", "daily", p)], prod + dev)
    wait_counters(redis, [counter_key("acme", "spend", "project", "acme-prod", "daily", p)], prod)
    wait_counters(redis, [counter_key("acme", "spend", "project", "acme-dev", "daily", p)], dev)
    wait_counters(redis, [counter_key("acme", "spend", "customer", "cust_1", "daily", p)], prod + dev)

    # an earlier day, seeded: it shows on its own date, three days back
    dates = dates_back(p.day, 5)
    earlier = dates[1]
    redis.set(day_key("acme", "spend", "project", "acme-prod", earlier), 777000001)
    redis.set(day_key("acme", "reqs", "project", "acme-prod", earlier), 2)
    redis.set(day_key("acme", "tokens", "project", "acme-prod", earlier), 99)

    zeros = [(d, 0, 0, 0) for d in dates[:-1]]
    expected = {
        "/keys/k1/usage/daily": ("key", "k1", zeros + [(p.day, prod, 1, 1200)]),
        "/keys/kd/usage/daily": ("key", "kd", zeros + [(p.day, dev, 1, 550)]),
        "/projects/acme-prod/usage/daily": (
            "project", "acme-prod",
            [zeros[0], (earlier, 777000001, 2, 99)] + zeros[2:] + [(p.day, prod, 1, 1200)]),
        "/projects/acme-dev/usage/daily": ("project", "acme-dev", zeros + [(p.day, dev, 1, 550)]),
        "/orgs/acme/usage/daily": ("org", "acme", zeros + [(p.day, prod + dev, 2, 1750)]),
        "/orgs/acme/customers/cust_1/usage/daily": ("customer", "cust_1", zeros + [(p.day, prod + dev, 2, 1750)]),
    }
    for path, (scope, ident, days) in expected.items():
        r = api.get(path + "?days=5")
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert (body["scope"], body["id"], body["org"]) == (scope, ident, "acme"), path
        if body["days"][-1]["date"] != p.day:  # the UTC day turned meanwhile: nothing to compare
            pytest.skip("the UTC day changed during the test")
        assert answer_days(body) == days, path
        # what Redis holds, date by date
        assert answer_days(body) == redis_days(redis, "acme", scope, ident, dates), path
        for d in body["days"]:
            assert d["spent_usd"] == api_usd(d["spent_nanousd"])

    # another org's customer of the same id is its own
    r = api.get("/orgs/beta/customers/cust_1/usage/daily?days=2")
    assert r.status_code == 200 and [d["spent_nanousd"] for d in r.json()["days"]] == [0, 0]


def api_usd(nanos):
    from openapi_check import format_usd
    return format_usd(nanos)


def test_days_from_1_to_35_oldest_first_ending_today_and_anything_else_is_400(daily_api):
    api = daily_api
    today = Periods().day
    r = api.get("/orgs/acme/usage/daily?days=1")
    assert r.status_code == 200
    assert [d["date"] for d in r.json()["days"]] == [today]
    r = api.get("/orgs/acme/usage/daily?days=35")
    days = r.json()["days"]
    assert r.status_code == 200 and len(days) == 35
    assert [d["date"] for d in days] == dates_back(days[-1]["date"], 35)
    assert days[-1]["date"] == today
    assert all((d["spent_nanousd"], d["spent_usd"], d["requests"], d["tokens"]) == (0, "0.00", 0, 0) for d in days)
    r = api.get("/keys/k1/usage/daily")  # default: 30
    assert r.status_code == 200 and len(r.json()["days"]) == 30
    for bad in ("0", "36", "x", "", "-1", "1.5", "100"):
        r = api.get("/keys/k1/usage/daily?days=" + bad)
        assert r.status_code == 400, bad
        assert r.json()["error"]["code"] == "invalid_request"
        assert "`days`" in r.json()["error"]["message"], r.text
    for bad in ("json", "CSV", "xml", ""):
        r = api.get("/orgs/acme/usage/daily?format=" + bad)
        assert r.status_code == 400 and "`format`" in r.json()["error"]["message"], bad
    r = api.get("/orgs/acme/usage/daily?day=3")
    assert r.status_code == 400 and "`day`" in r.json()["error"]["message"]


def test_csv_has_a_header_row_and_one_row_per_day(daily_api, redis):
    api = daily_api
    cost = send(api, SECRETS["k1"], "cust_9", 300, 30)
    p = Periods()
    wait_counters(redis, [counter_key("acme", "spend", "key", "k1", "daily", p)], cost)
    for path in ("/keys/k1/usage/daily", "/projects/acme-prod/usage/daily", "/orgs/acme/usage/daily",
                 "/orgs/acme/customers/cust_9/usage/daily"):
        as_json = api.get(path + "?days=3").json()
        r = api.get(path + "?days=3&format=csv")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        lines = r.text.split("\n")
        assert lines[-1] == "" and "\r" not in r.text  # LF line ends, the last one too
        assert lines[0] == "date,spent_usd,spent_nanousd,requests,tokens"
        rows = [line.split(",") for line in lines[1:-1]]
        assert rows == [[d["date"], d["spent_usd"], str(d["spent_nanousd"]), str(d["requests"]), str(d["tokens"])]
                        for d in as_json["days"]], path
        assert rows[-1] == [p.day, api_usd(cost), str(cost), "1", "330"], path
    # the query's order does not matter; an error is JSON even when CSV was asked for
    assert api.get("/orgs/acme/usage/daily?format=csv&days=2").text.count("\n") == 3
    r = api.get("/orgs/nope/usage/daily?format=csv")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"


def test_self_daily_usage_with_the_keys_own_secret(daily_api, redis):
    api = daily_api
    cost = send(api, DEV_SECRET, "cust_2", 100, 10)
    created = api.post("/keys", {"project": "acme-dev", "id": "api_dev"}).json()
    api_cost = send(api, created["secret"], "cust_2", 200, 20)
    p = Periods()
    wait_counters(redis, [counter_key("acme", "spend", "project", "acme-dev", "daily", p)], cost + api_cost)

    r = api.get("/keys/self/usage/daily?days=2", token=DEV_SECRET)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["scope"], body["id"], body["org"]) == ("key", "kd", "acme")
    assert answer_days(body)[-1] == (p.day, cost, 1, 110)
    assert body == api.get("/keys/kd/usage/daily?days=2").json()
    r = api.get("/keys/self/usage/daily?format=csv&days=1", token=created["secret"])
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.text.split("\n")[1] == "%s,%s,%d,1,220" % (p.day, api_usd(api_cost), api_cost)
    # no key's secret, no secret, a revoked key's: 401
    assert api.get("/keys/self/usage/daily", token="sk-not-a-key").status_code == 401
    assert api.get("/keys/self/usage/daily", token="").status_code == 401
    api.delete("/keys/api_dev")
    assert api.get("/keys/self/usage/daily", token=created["secret"]).status_code == 401
    # a key's own secret reads nothing but its own
    assert api.get("/keys/kd/usage/daily", token=DEV_SECRET).status_code == 401


def test_unknown_scopes_are_404(daily_api):
    api = daily_api
    for path in ("/keys/nobody/usage/daily", "/projects/nowhere/usage/daily", "/orgs/nope/usage/daily",
                 "/orgs/nope/customers/c/usage/daily", "/orgs/bad%7Bid%7D/usage/daily"):
        r = api.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path


def test_orgs_lists_the_files_and_the_apis_once_each_by_id(daily_api):
    api = daily_api
    listed = api.get("/orgs").json()["orgs"]
    assert [o["id"] for o in listed] == ["acme", "beta"]
    assert all(o["source"] == "file" for o in listed)
    assert listed == [api.get("/orgs/acme").json(), api.get("/orgs/beta").json()]

    assert api.put("/orgs/newco", {"limits": {"daily_usd": "1"}}).status_code == 201
    assert api.put("/orgs/aaa-first", {}).status_code == 201
    # a file org with an API record over it: once, as it now is
    assert api.put("/orgs/acme/limits", {"monthly_usd": "7"}).status_code == 200
    assert api.put("/orgs/beta/cleared", {"cleared_usd": "1.5"}).status_code == 200
    listed = api.get("/orgs").json()["orgs"]
    assert [o["id"] for o in listed] == ["aaa-first", "acme", "beta", "newco"]
    for org in listed:
        assert org == api.get("/orgs/%s" % org["id"]).json()
    by_id = {o["id"]: o for o in listed}
    assert by_id["acme"]["limits"] == {"monthly_usd": "7.00"} and by_id["acme"]["source"] == "file"
    assert by_id["beta"]["cleared_nanousd"] == 1500000000
    assert by_id["newco"]["source"] == "api" and by_id["newco"]["limits"] == {"daily_usd": "1.00"}
    assert api.get("/orgs?x=1").status_code == 400


def test_projects_of_an_org_are_the_files_and_the_apis(daily_api):
    api = daily_api
    assert api.put("/projects/acme-api", {"org": "acme", "limits": {"monthly_usd": "3"}}).status_code == 201
    assert api.put("/projects/acme-prod/limits", {"rpm": 5}).status_code == 200
    listed = api.get("/projects?org=acme").json()["projects"]
    assert [p["id"] for p in listed] == ["acme-api", "acme-dev", "acme-prod"]
    for project in listed:
        assert project == api.get("/projects/%s" % project["id"]).json()
    assert [p["source"] for p in listed] == ["api", "file", "file"]
    assert listed[2]["limits"] == {"rpm": 5}
    assert [p["id"] for p in api.get("/projects?org=beta").json()["projects"]] == ["beta-main"]
    # an API org: its API projects only; none yet: []
    api.put("/orgs/newco", {})
    assert api.get("/projects?org=newco").json() == {"projects": []}
    api.put("/projects/newco-app", {"org": "newco"})
    assert [p["id"] for p in api.get("/projects?org=newco").json()["projects"]] == ["newco-app"]
    # no org, an unknown one, a bad one
    r = api.get("/projects")
    assert r.status_code == 400 and "`org`" in r.json()["error"]["message"]
    assert api.get("/projects?org=nope").status_code == 404
    assert api.get("/projects?org=a%2Fb").status_code == 400
    assert api.get("/projects?org=acme&project=x").status_code == 400


@pytest.mark.parametrize("path", ["/orgs", "/projects?org=acme", "/keys/k1/usage/daily", "/projects/acme-prod/usage/daily",
                                  "/orgs/acme/usage/daily?format=csv", "/orgs/acme/customers/c/usage/daily"])
def test_the_admin_token_is_needed(daily_api, path):
    api = daily_api
    assert api.get(path, token="").status_code == 401
    assert api.get(path, token="wrong-token").status_code == 401
    assert api.get(path, token=SECRETS["k1"]).status_code == 401  # a key's secret is no admin token
    # (and only GET: the lists and the days are read-only)
    r = httpx.post(api.nginx.url + PREFIX + path.split("?")[0], headers={"authorization": "Bearer " + api.token})
    assert r.status_code == 405 and r.headers["allow"] == "GET"
