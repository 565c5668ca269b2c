"""docs/openapi.yaml and its checker (openapi_check.py), without NGINX or Redis.

    /usr/bin/python3 -m pytest -q t/integration/test_openapi_doc.py
"""

import copy
import json
import os
import sys

import jsonschema
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import openapi_check  # noqa: E402
from openapi_check import check  # noqa: E402

DOC = openapi_check.document()
SCHEMAS = DOC["components"]["schemas"]

# SPEC section 7: every path relative to the API location, and its methods.
SPEC_PATHS = {
    "/keys": {"post", "get"},
    "/keys/{id}": {"get", "delete"},
    "/keys/{id}/rotate": {"post"},
    "/keys/{id}/limits": {"put", "delete"},
    "/keys/{id}/usage": {"get"},
    "/keys/{id}/budgets": {"get"},
    "/keys/self": {"get"},
    "/keys/self/usage": {"get"},
    "/keys/self/budgets": {"get"},
    "/projects/{id}": {"put", "get"},
    "/projects/{id}/usage": {"get"},
    "/projects/{id}/limits": {"put", "delete"},
    "/orgs/{id}": {"put", "get"},
    "/orgs/{id}/usage": {"get"},
    "/orgs/{id}/limits": {"put", "delete"},
    "/orgs/{org}/customers/{customer}/usage": {"get"},
    "/orgs/{org}/customers/{customer}/limits": {"put", "delete"},
    "/orgs/{id}/balance": {"get"},
    "/orgs/{id}/topups": {"post"},
    "/orgs/{id}/cleared": {"put"},
    "/orgs/{id}/events": {"get"},
    # section 11: what the dashboard reads
    "/orgs": {"get"},
    "/projects": {"get"},
    "/keys/{id}/usage/daily": {"get"},
    "/keys/self/usage/daily": {"get"},
    "/projects/{id}/usage/daily": {"get"},
    "/orgs/{id}/usage/daily": {"get"},
    "/orgs/{org}/customers/{customer}/usage/daily": {"get"},
    # section 2b: would this pass?
    "/keys/{id}/check": {"post"},
    "/keys/self/check": {"post"},
}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
SELF_PATHS = {"/keys/self", "/keys/self/usage", "/keys/self/budgets", "/keys/self/usage/daily",
              "/keys/self/check"}
ERROR_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "payload_too_large", 503: "unavailable"}


def operations():
    for template, item in DOC["paths"].items():
        for method in METHODS:
            if method in item:
                yield template, method, item[method]


def refs(node, at="#"):
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "$ref" and isinstance(value, str):
                yield at, value
            else:
                yield from refs(value, "%s/%s" % (at, name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from refs(value, "%s/%d" % (at, i))


# ---------------------------------------------------------------- the document

def test_document_is_openapi_3_1():
    assert DOC["openapi"] == "3.1.0"
    assert DOC["info"]["title"] and DOC["info"]["version"]
    assert DOC["components"]["securitySchemes"]["adminToken"] == {
        "type": "http", "scheme": "bearer",
        "description": DOC["components"]["securitySchemes"]["adminToken"]["description"]}
    assert DOC["security"] == [{"adminToken": []}]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_2020_12(name):
    jsonschema.Draft202012Validator.check_schema(SCHEMAS[name])


def test_required_schemas_exist():
    for name in ("Key", "KeyWithSecret", "Project", "Org", "Limits", "Usage", "Window", "Rate", "Layer",
                 "Budgets", "Balance", "Topup", "Events", "Error", "OrgList", "ProjectList", "DailyUsage",
                 "Day"):
        assert name in SCHEMAS, name


def test_every_ref_resolves():
    found = list(refs(DOC))
    assert len(found) > 100
    for at, ref in found:
        try:
            openapi_check.resolve_ref(ref)
        except (KeyError, IndexError, ValueError):
            pytest.fail("%s: $ref %s does not resolve" % (at, ref))


def test_every_schema_of_an_operation_is_valid():
    for template, method, op in operations():
        bodies = [op["requestBody"]] if "requestBody" in op else []
        bodies += [openapi_check._deref(r) for r in op["responses"].values()]
        for body in bodies:
            for media in (body.get("content") or {}).values():
                jsonschema.Draft202012Validator.check_schema(media["schema"])


def test_paths_and_methods_are_spec_section_7():
    documented = {t: {m for m in METHODS if m in item} for t, item in DOC["paths"].items()}
    assert documented == SPEC_PATHS


def test_every_operation_documents_its_statuses():
    for template, method, op in operations():
        statuses = set(op["responses"])
        assert {"400", "401", "413", "503"} <= statuses, (method, template)
        assert any(s.startswith("2") for s in statuses), (method, template)
        if "{" in template:
            assert "404" in statuses, (method, template)
        assert ("requestBody" in op) == (method in ("put", "post")), (method, template)
        for status, response in op["responses"].items():
            response = openapi_check._deref(response)
            schema = response["content"]["application/json"]["schema"]
            if int(status) >= 400:
                code = ERROR_CODES[int(status)]
                assert schema["$ref"].endswith("Error"), (method, template, status)
                check(method, template, int(status), {"error": {"code": code, "message": "m"}})
        expected = [{"keySecret": []}] if template in SELF_PATHS else None
        assert op.get("security") == expected, (method, template)
    assert "409" in DOC["paths"]["/keys"]["post"]["responses"]
    assert "201" in DOC["paths"]["/keys"]["post"]["responses"]
    for template in ("/projects/{id}", "/orgs/{id}"):
        assert {"200", "201"} <= set(DOC["paths"][template]["put"]["responses"])


def test_method_not_allowed_documents_allow():
    response = DOC["components"]["responses"]["MethodNotAllowed"]
    assert response["headers"]["Allow"]["required"] is True
    assert DOC["components"]["responses"]["Unavailable"]["headers"]["Retry-After"]["required"] is True


@pytest.mark.parametrize("name", sorted(n for n in SCHEMAS if "examples" in SCHEMAS[n]))
def test_schema_examples_are_valid(name):
    validator = jsonschema.Draft202012Validator(SCHEMAS[name], resolver=openapi_check.resolver())
    for example in SCHEMAS[name]["examples"]:
        validator.validate(example)
        if not name.endswith(("Request", "Input")):  # answers: amounts as the module renders them
            assert not openapi_check._amount_problems(example), name


# ---------------------------------------------------------------- answers

LIMITS = {"daily_usd": "2.00", "monthly_usd": "10.00", "lifetime_usd": "40.00", "daily_requests": 100,
          "monthly_requests": 1000, "daily_tokens": 50000, "monthly_tokens": 900000, "rpm": 600, "tpm": 200000}
KEY = {"id": "key_prod_1", "name": None, "project": "acme-prod", "org": "acme", "limits": LIMITS,
       "expires_at": "2027-01-01T00:00:00Z", "revoked": False, "created_at": None, "source": "file"}
API_KEY = dict(KEY, id="key_3kTMd9QmZx81bVcA", name="ci", limits={"monthly_usd": "0.075"}, expires_at=None,
               created_at="2026-11-20T09:30:00Z", source="api")
SECRET = "sk-sc-" + "aZ09" * 10 + "xyz"
PROJECT = {"id": "acme-prod", "org": "acme", "limits": {"monthly_usd": "50.00"}, "source": "api"}
ORG = {"id": "acme", "plan": "paid", "created_at": "2026-01-10T00:00:00Z", "prepaid": True,
       "low_balance_nanousd": 5000000000, "low_balance_usd": "5.00", "timezone": "UTC", "limits": {"daily_usd": "20.00"},
       "cleared_nanousd": 123, "cleared_usd": "0.000000123", "source": "file"}
ORG_PLAIN = dict(ORG, plan=None, created_at=None, prepaid=False, low_balance_nanousd=None, low_balance_usd=None,
                 limits={}, cleared_nanousd=0, cleared_usd="0.00", source="api")


def window(name, period, reset_at, spent, cap, requests_cap=None, tokens_cap=None):
    from openapi_check import format_usd
    return {"window": name, "period": period, "reset_at": reset_at,
            "spent_nanousd": spent, "spent_usd": format_usd(spent),
            "cap_nanousd": cap, "cap_usd": None if cap is None else format_usd(cap),
            "remaining_nanousd": None if cap is None else max(cap - spent, 0),
            "remaining_usd": None if cap is None else format_usd(max(cap - spent, 0)),
            # no lifetime counter of requests or tokens is kept: null (SPEC section 6)
            "requests": None if name == "lifetime" else 7, "requests_cap": requests_cap,
            "tokens": None if name == "lifetime" else 1234, "tokens_cap": tokens_cap,
            "forecast_exhausted_at": None}


USAGE = {"scope": "key", "id": "key_prod_1", "org": "acme",
         "windows": [window("daily", "2026-11-20", "2026-11-21T00:00:00Z", 500000000, 2000000000, 100, 50000),
                     window("monthly", "2026-11", "2026-12-01T00:00:00Z", 12000000000, 10000000000),
                     window("lifetime", None, None, 12000000000, None)],
         "rates": {"rpm": {"used": 3, "cap": 600, "reset_at": "2026-11-20T10:15:00Z"}, "tpm": None}}


def layer(scope, id_, name, cap, spent, reset_at, binding):
    from openapi_check import format_usd
    return {"scope": scope, "id": id_, "window": name, "cap_nanousd": cap, "cap_usd": format_usd(cap),
            "spent_nanousd": spent, "spent_usd": format_usd(spent), "remaining_nanousd": cap - spent,
            "remaining_usd": format_usd(cap - spent), "reset_at": reset_at, "forecast_exhausted_at": None,
            "model": None, "binding": binding}


BUDGETS = {"key": "key_prod_1", "budgets": [
    layer("key", "key_prod_1", "daily", 2000000000, 500000000, "2026-11-21T00:00:00Z", False),
    layer("project", "acme-prod", "monthly", 50000000000, 49000000000, "2026-12-01T00:00:00Z", True),
    layer("key", "key_prod_1", "lifetime", 40000000000, 12000000000, None, False),
    layer("org", "acme", "balance", 12000000000, 30000000, None, False)]}
BALANCE = {"org": "acme", "balance_nanousd": 12000000000, "balance_usd": "12.00", "reserved_nanousd": 30000000,
           "reserved_usd": "0.03", "available_nanousd": 11970000000, "available_usd": "11.97",
           "low_balance_nanousd": None, "low_balance_usd": None}
TOPUP = {"org": "acme", "idempotency_key": "inv-42", "amount_nanousd": 25000000000, "amount_usd": "25.00",
         "balance_nanousd": -1500000000, "balance_usd": "-1.50", "applied": False}
EVENTS = {"events": [
    {"id": "1764000000000-0", "type": "key_created", "key": "key_3kTMd9QmZx81bVcA", "by": "api"},
    {"id": "1764000000123-1", "type": "spend_cap_warning_threshold_reached", "scope": "key",
     "data_id": "key_prod_1", "window": "monthly", "period": "2026-11", "fraction": "0.8",
     "spent": "8000000000", "cap": "10000000000"}],
    "next": "1764000000123-1"}
CUSTOMER_LIMITS = {"org": "acme", "customer": "cust_42", "limits": {"monthly_usd": "5.00", "rpm": 30}}
DAILY = {"scope": "key", "id": "key_prod_1", "org": "acme", "days": [
    {"date": "2026-11-19", "spent_nanousd": 0, "spent_usd": "0.00", "requests": 0, "tokens": 0},
    {"date": "2026-11-20", "spent_nanousd": 1500000123, "spent_usd": "1.500000123", "requests": 3, "tokens": 42}]}
DAILY_CSV = ("date,spent_usd,spent_nanousd,requests,tokens\n"
             "2026-11-19,0.00,0,0,0\n"
             "2026-11-20,1.500000123,1500000123,3,42\n")
CSV = {"Content-Type": "text/csv; charset=utf-8"}

# (method, path, status, a valid answer): every answer shape, on paths written as a
# client writes them (ids, a query, a trailing slash).
VALID = [
    ("POST", "/keys", 201, dict(API_KEY, secret=SECRET)),
    ("GET", "/keys?project=acme-prod", 200, {"keys": [KEY, API_KEY]}),
    ("GET", "/keys?org=acme", 200, {"keys": []}),
    ("GET", "/keys/key_prod_1", 200, KEY),
    ("DELETE", "/keys/key_prod_1", 200, dict(KEY, revoked=True)),
    ("POST", "/keys/key_prod_1/rotate", 200, dict(KEY, secret=SECRET)),
    ("PUT", "/keys/key_prod_1/limits", 200, KEY),
    ("DELETE", "/keys/key_prod_1/limits", 200, dict(API_KEY, limits={})),
    ("GET", "/keys/key_prod_1/usage", 200, USAGE),
    ("GET", "/keys/key_prod_1/budgets", 200, BUDGETS),
    ("GET", "/keys/self", 200, KEY),
    ("GET", "/keys/self/usage", 200, USAGE),
    ("GET", "/keys/self/budgets/", 200, {"key": "key_prod_1", "budgets": []}),
    ("PUT", "/projects/acme-prod", 201, PROJECT),
    ("PUT", "/projects/acme-prod", 200, PROJECT),
    ("GET", "/projects/acme-prod", 200, dict(PROJECT, source="file")),
    ("GET", "/projects/acme-prod/usage", 200, dict(USAGE, scope="project", id="acme-prod")),
    ("PUT", "/projects/acme-prod/limits", 200, PROJECT),
    ("DELETE", "/projects/acme-prod/limits", 200, PROJECT),
    ("PUT", "/orgs/acme", 201, ORG_PLAIN),
    ("PUT", "/orgs/acme", 200, ORG),
    ("GET", "/orgs/acme", 200, ORG),
    ("GET", "/orgs/acme/usage", 200, dict(USAGE, scope="org", id="acme")),
    ("PUT", "/orgs/acme/limits", 200, ORG),
    ("DELETE", "/orgs/acme/limits", 200, ORG_PLAIN),
    ("GET", "/orgs/acme/customers/cust_42/usage", 200, dict(USAGE, scope="customer", id="cust_42")),
    ("PUT", "/orgs/acme/customers/cust_42/limits", 200, CUSTOMER_LIMITS),
    ("DELETE", "/orgs/acme/customers/cust_42/limits", 200, dict(CUSTOMER_LIMITS, limits={})),
    ("GET", "/orgs/acme/balance", 200, BALANCE),
    ("POST", "/orgs/acme/topups", 200, TOPUP),
    ("PUT", "/orgs/acme/cleared", 200, ORG),
    ("GET", "/orgs/acme/events?after=1763999999999-0&count=10", 200, EVENTS),
    ("GET", "/orgs/acme/events", 200, {"events": [], "next": None}),
    ("GET", "/orgs", 200, {"orgs": [ORG, dict(ORG_PLAIN, id="newco")]}),
    ("GET", "/orgs/", 200, {"orgs": []}),
    ("GET", "/projects?org=acme", 200, {"projects": [dict(PROJECT, source="file"), dict(PROJECT, id="api-p")]}),
    ("GET", "/keys/key_prod_1/usage/daily?days=2", 200, DAILY),
    ("GET", "/keys/self/usage/daily", 200, DAILY),
    ("GET", "/projects/acme-prod/usage/daily", 200, dict(DAILY, scope="project", id="acme-prod")),
    ("GET", "/orgs/acme/usage/daily", 200, dict(DAILY, scope="org", id="acme")),
    ("GET", "/orgs/acme/customers/cust_42/usage/daily", 200, dict(DAILY, scope="customer", id="cust_42")),
    ("GET", "/orgs/acme/usage/daily?days=0", 400,
     {"error": {"code": "invalid_request", "message": "`days` must be an integer from 1 to 35"}}),
    ("GET", "/projects", 400, {"error": {"code": "invalid_request", "message": "`org` is required"}}),
    ("GET", "/projects?org=nope", 404, {"error": {"code": "not_found", "message": "no org `nope`"}}),
    ("POST", "/keys", 409, {"error": {"code": "conflict", "message": "key `k` exists"}}),
    ("GET", "/keys/nope", 404, {"error": {"code": "not_found", "message": "no key `nope`"}}),
    ("PUT", "/orgs/acme/limits", 413, {"error": {"code": "payload_too_large", "message": "too large"}}),
    ("GET", "/keys/self", 401, {"error": {"code": "unauthorized", "message": "missing or wrong admin token"}}),
    ("GET", "/orgs/acme/events?count=0", 400,
     {"error": {"code": "invalid_request", "message": "`count` must be an integer from 1 to 1000"}}),
    ("GET", "/orgs/acme/balance", 503, {"error": {"code": "unavailable", "message": "redis is unavailable"}}),
]


@pytest.mark.parametrize("method,path,status,body", VALID, ids=["%s %s %d" % v[:3] for v in VALID])
def test_check_accepts_valid_answers(method, path, status, body):
    check(method, path, status, body)
    check(method, path, status, json.dumps(body))
    check(method, path, status, json.dumps(body).encode())


def rejected(method, path, status, body, *words):
    with pytest.raises(AssertionError) as e:
        check(method, path, status, body)
    text = str(e.value)
    assert method in text and status and str(status) in text, text
    for word in words:
        assert word in text, text
    return text


# (method, path, status, a valid answer, what to drop, what to add, an amount field to spoil)
SHAPES = [
    ("POST", "/keys", 201, dict(API_KEY, secret=SECRET), ("secret",), None),
    ("GET", "/keys/key_prod_1", 200, KEY, ("created_at",), None),
    ("GET", "/projects/acme-prod", 200, PROJECT, ("source",), None),
    ("GET", "/orgs/acme", 200, ORG, ("low_balance_usd",), ("cleared_usd",)),
    ("GET", "/keys/key_prod_1/usage", 200, USAGE, ("rates",), ("windows", 1, "spent_usd")),
    ("GET", "/keys/key_prod_1/budgets", 200, BUDGETS, ("budgets", 0, "binding"), ("budgets", 3, "remaining_usd")),
    ("GET", "/orgs/acme/balance", 200, BALANCE, ("available_nanousd",), ("reserved_usd",)),
    ("POST", "/orgs/acme/topups", 200, TOPUP, ("applied",), ("amount_usd",)),
    ("GET", "/orgs/acme/events", 200, EVENTS, ("next",), None),
    ("GET", "/orgs/acme/customers/cust_42/usage", 200, USAGE, ("windows", 2, "tokens_cap"),
     ("windows", 0, "cap_usd")),
    ("PUT", "/orgs/acme/customers/cust_42/limits", 200, CUSTOMER_LIMITS, ("customer",), ("limits", "monthly_usd")),
    ("GET", "/keys/k", 404, {"error": {"code": "not_found", "message": "m"}}, ("error", "message"), None),
    ("GET", "/orgs/acme/usage/daily", 200, DAILY, ("days", 1, "tokens"), ("days", 1, "spent_usd")),
    ("GET", "/orgs", 200, {"orgs": [ORG]}, ("orgs", 0, "cleared_usd"), ("orgs", 0, "low_balance_usd")),
    ("GET", "/projects?org=acme", 200, {"projects": [PROJECT]}, ("projects", 0, "org"), None),
]


def at(body, path):
    for part in path[:-1]:
        body = body[part]
    return body, path[-1]


@pytest.mark.parametrize("method,path,status,body,drop,amount", SHAPES, ids=["%s %s %d" % s[:3] for s in SHAPES])
def test_check_rejects_a_missing_field(method, path, status, body, drop, amount):
    spoilt = copy.deepcopy(body)
    parent, name = at(spoilt, drop)
    del parent[name]
    rejected(method, path, status, spoilt, "required")


@pytest.mark.parametrize("method,path,status,body,drop,amount", SHAPES, ids=["%s %s %d" % s[:3] for s in SHAPES])
def test_check_rejects_an_extra_field(method, path, status, body, drop, amount):
    spoilt = copy.deepcopy(body)
    parent, _ = at(spoilt, drop)
    if not isinstance(parent, dict) or parent is spoilt.get("events"):
        parent = spoilt
    parent["surprise"] = 1
    rejected(method, path, status, spoilt, "surprise")


@pytest.mark.parametrize("method,path,status,body,drop,amount",
                         [s for s in SHAPES if s[5]], ids=["%s %s %d" % s[:3] for s in SHAPES if s[5]])
@pytest.mark.parametrize("bad", ["1.5", "12", "1.0000000001", "$1.00", "1,00", "+1.00", " 1.00", "1e3", 100])
def test_check_rejects_a_wrong_amount_string(method, path, status, body, drop, amount, bad):
    spoilt = copy.deepcopy(body)
    parent, name = at(spoilt, amount)
    parent[name] = bad
    rejected(method, path, status, spoilt)


def test_check_rejects_amounts_that_disagree_or_are_not_canonical():
    rejected("GET", "/orgs/acme/balance", 200, dict(BALANCE, balance_usd="12.01"), "balance_nanousd")
    rejected("GET", "/orgs/acme/balance", 200, dict(BALANCE, balance_usd="12.000"), "balance_usd")
    rejected("GET", "/orgs/acme/balance", 200, dict(BALANCE, low_balance_usd="5.00"))
    rejected("GET", "/keys/key_prod_1", 200, dict(KEY, limits={"monthly_usd": "10.50000"}), "monthly_usd")
    rejected("GET", "/orgs/acme", 200, dict(ORG, cleared_nanousd=123.0))


def test_check_rejects_other_wrong_values():
    rejected("GET", "/keys/key_prod_1", 200, dict(KEY, source="redis"), "source")
    rejected("GET", "/keys/key_prod_1", 200, dict(KEY, expires_at="2027-01-01"), "expires_at")
    rejected("GET", "/keys/key_prod_1", 200, dict(KEY, limits={"rpm": -1}))
    rejected("GET", "/keys/key_prod_1", 200, dict(KEY, limits={"hourly_usd": "1.00"}), "hourly_usd")
    rejected("POST", "/keys", 201, dict(API_KEY, secret="sk-sc-short"), "secret")
    rejected("GET", "/keys/key_prod_1", 200, dict(KEY, secret=SECRET), "secret")  # never outside create/rotate
    rejected("DELETE", "/keys/key_prod_1", 200, KEY)  # revoked must be true
    windows = copy.deepcopy(USAGE["windows"])
    rejected("GET", "/keys/k/usage", 200, dict(USAGE, windows=windows[:2]))
    windows[2]["requests_cap"] = 5
    rejected("GET", "/keys/k/usage", 200, dict(USAGE, windows=windows))
    two = copy.deepcopy(BUDGETS)
    two["budgets"][0]["binding"] = True
    rejected("GET", "/keys/k/budgets", 200, two)
    rejected("GET", "/orgs/acme/events", 200, {"events": [{"id": "1-0", "type": "topup", "n": 5}], "next": "1-0"})
    rejected("GET", "/keys/k", 404, {"error": {"code": "unauthorized", "message": "m"}})
    rejected("GET", "/keys/k", 200, '{"id": "a", "id": "b"}', "repeats")
    rejected("GET", "/keys/k", 200, b"not json", "not JSON")
    rejected("GET", "/keys/k", 200, None, "no")


def test_undocumented_statuses_are_refused():
    text = rejected("GET", "/keys/key_prod_1", 201, KEY, "undocumented")
    assert "/keys/{id}" in text
    rejected("POST", "/keys", 200, dict(API_KEY, secret=SECRET), "undocumented")
    rejected("GET", "/keys/self", 404, {"error": {"code": "not_found", "message": "m"}}, "undocumented")
    rejected("GET", "/nowhere", 200, {}, "no path")
    rejected("GET", "/nowhere", 503, {"error": {"code": "unavailable", "message": "m"}}, "no path")
    rejected("PATCH", "/keys/k1", 400, {"error": {"code": "invalid_request", "message": "m"}}, "not documented")


def test_self_is_the_literal_path():
    assert openapi_check.find_path("/keys/self") == "/keys/self"
    assert openapi_check.find_path("keys/self/") == "/keys/self"
    assert openapi_check.find_path("/keys/self/usage?x=1") == "/keys/self/usage"
    assert openapi_check.find_path("/keys/selfish") == "/keys/{id}"
    assert openapi_check.find_path("/keys/self/rotate") == "/keys/{id}/rotate"
    check("DELETE", "/keys/key_prod_1", 200, dict(KEY, revoked=True))
    rejected("DELETE", "/keys/self", 200, dict(KEY, revoked=True), "not documented")
    check("DELETE", "/keys/self", 405, {"error": {"code": "method_not_allowed", "message": "m"}},
          headers={"Allow": "GET"})


def test_method_not_allowed_and_unknown_paths():
    err = {"error": {"code": "method_not_allowed", "message": "method PATCH is not allowed"}}
    check("PATCH", "/keys/k1", 405, err)
    with pytest.raises(AssertionError, match="Allow"):
        check("PATCH", "/keys/k1", 405, err, headers={"Content-Type": "application/json"})
    rejected("PATCH", "/keys/k1", 405, {"error": {"code": "not_found", "message": "m"}})
    check("GET", "/no/such/call", 404, {"error": {"code": "not_found", "message": "no API call"}})
    # the token and the body size are checked before the path and the method
    check("GET", "/no/such/call", 401, {"error": {"code": "unauthorized", "message": "m"}})
    check("PATCH", "/keys/k1", 401, {"error": {"code": "unauthorized", "message": "m"}})
    check("GET", "/no/such/call", 413, {"error": {"code": "payload_too_large", "message": "m"}})
    check("GET", "/keys/k1", 413, {"error": {"code": "payload_too_large", "message": "m"}})
    check("GET", "/orgs/acme", 503, {"error": {"code": "unavailable", "message": "m"}}, headers={"Retry-After": "1"})
    with pytest.raises(AssertionError, match="Retry-After"):
        check("GET", "/orgs/acme", 503, {"error": {"code": "unavailable", "message": "m"}}, headers={})
    check("GET", "/keys/a:b", 404, {"error": {"code": "not_found", "message": "not a valid id"}})


def test_path_parameters_and_operation_ids():
    ids = []
    for template, method, op in operations():
        item = DOC["paths"][template]
        params = [openapi_check._deref(p) for p in item.get("parameters", []) + op.get("parameters", [])]
        in_path = {p["name"] for p in params if p["in"] == "path"}
        named = {seg[1:-1] for seg in template.split("/") if seg.startswith("{")}
        assert in_path == named, (method, template)
        assert all(p["required"] for p in params if p["in"] == "path"), (method, template)
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids)) == 38


# ---------------------------------------------------------------- CSV answers

def test_check_accepts_the_daily_csv():
    for path in ("/keys/k/usage/daily?format=csv", "/keys/self/usage/daily?format=csv&days=2",
                 "/projects/p/usage/daily?format=csv", "/orgs/o/usage/daily?format=csv",
                 "/orgs/o/customers/c/usage/daily?format=csv"):
        check("GET", path, 200, DAILY_CSV, headers=CSV)
        check("GET", path, 200, DAILY_CSV.encode(), headers=CSV)
    one = "date,spent_usd,spent_nanousd,requests,tokens\n2026-11-20,0.00,0,0,0\n"
    check("GET", "/orgs/o/usage/daily?format=csv&days=1", 200, one, headers=CSV)


def rejected_csv(path, body, *words):
    with pytest.raises(AssertionError) as e:
        check("GET", path, 200, body, headers=CSV)
    for word in words:
        assert word in str(e.value), str(e.value)


def test_check_rejects_a_wrong_csv():
    for bad in ["", "date,spent_usd,spent_nanousd,requests,tokens\n",  # no day
                DAILY_CSV.replace("\n", "\r\n"),  # LF, not CRLF
                DAILY_CSV.replace("date,", "day,"),
                DAILY_CSV.rstrip("\n"),
                DAILY_CSV.replace("2026-11-19", "19.11.2026"),
                DAILY_CSV + "2026-11-21,0.00,0,0\n"]:
        rejected_csv("/orgs/o/usage/daily?format=csv", bad, "CSV")
    rejected_csv("/orgs/o/usage/daily?format=csv", DAILY_CSV.replace("1.500000123", "1.50"), "spent_usd")
    # text/csv only where it is documented
    rejected_csv("/orgs/o/usage?format=csv", DAILY_CSV, "text/csv")
    # a CSV body that says it is JSON is no JSON
    rejected("GET", "/orgs/o/usage/daily?format=csv", 200, DAILY_CSV, "not JSON")
    # the CSV's call answers JSON when it is asked for none
    check("GET", "/orgs/o/usage/daily", 200, DAILY, headers={"Content-Type": "application/json"})
