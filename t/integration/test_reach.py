"""No input a caller controls makes a request cost more than it reserved (issue 16).

A request whose billed input is not all in its body reserves the model's context
window; provider-run tools, audio and priority processing are refused; a request
without an output bound is sent with the one it reserved; tool prompts and
predictions are reserved too. Requests without a body are forwarded counted
nowhere, and POSTs to endpoints whose cost nothing bounds are refused. The fake
provider reports the most it could bill (x-fake-usage: max, t/fake_billing.py),
and every settlement stays within its reservation."""

import http.client
import json

import httpx
import pytest

from support import (CHAINS, SECRETS, all_counter_keys, chat_body, cost_nanos, default_policy, error_envelope,
                     format_usd, max_input_rate, messages_body, post, price_of, redis_barrier, sent_length,
                     set_limits, snapshot, usd_nanos, wait_counters, wait_request_settled)

CONTEXT = {"gpt-4o-mini": 128000, "claude-sonnet-4-5": 200000}


def reach_policy(**key_limits):
    """Caps high enough for a context window's reservation (k1's, unless given)."""
    pol = default_policy()
    pol["models"]["gpt-4o-mini"]["context_window"] = CONTEXT["gpt-4o-mini"]
    pol["default_context_window"] = CONTEXT["claude-sonnet-4-5"]  # the Anthropic model has none of its own
    high = {"daily_usd": "100", "monthly_usd": "1000", "lifetime_usd": "10000"}
    for scope in ("key", "project", "org"):
        set_limits(pol, scope, high)
    if key_limits:
        next(k for k in pol["keys"] if k["id"] == "k1")["limits"] = dict(key_limits)
    return pol


def adversary(model):
    """Headers that make the fake provider bill the most it could."""
    return {"x-fake-usage": "max", "x-fake-context-window": str(CONTEXT[model])}


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def entry_of(ng, r):
    return ng.log_entry(r.headers["x-test-request-id"])


def nanos(usd_text):
    return usd_nanos(usd_text)


# ------------------------------------------------------------ input not in the body

# (surface path, model, body): each bills input the body only names
OUTSIDE = {
    "responses-previous_response_id": ("/v1/responses", "gpt-4o-mini",
                                       {"input": "and then?", "previous_response_id": "resp_abc"}),
    "responses-conversation": ("/v1/responses", "gpt-4o-mini", {"input": "and then?", "conversation": "conv_abc"}),
    "responses-stored-prompt": ("/v1/responses", "gpt-4o-mini", {"prompt": {"id": "pmpt_abc", "version": "2"}}),
    "responses-input_file-url": ("/v1/responses", "gpt-4o-mini", {"input": [{"role": "user", "content": [
        {"type": "input_file", "file_url": "https://example.com/a.pdf"}]}]}),
    "responses-input_image-id": ("/v1/responses", "gpt-4o-mini", {"input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file-abc"}]}]}),
    "responses-item_reference": ("/v1/responses", "gpt-4o-mini",
                                 {"input": [{"type": "item_reference", "id": "msg_abc"}]}),
    "responses-stored-reasoning": ("/v1/responses", "gpt-4o-mini",
                                   {"input": [{"type": "reasoning", "id": "rs_abc", "summary": []}]}),
    "chat-image_url": ("/v1/chat/completions", "gpt-4o-mini", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]}),
    "chat-file": ("/v1/chat/completions", "gpt-4o-mini", {"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-abc"}}]}]}),
    "anthropic-image-url": ("/v1/messages", "claude-sonnet-4-5", {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}}]}]}),
    "anthropic-document-file": ("/v1/messages", "claude-sonnet-4-5", {"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "file", "file_id": "file_abc"}}]}]}),
    "anthropic-image-in-tool-result": ("/v1/messages", "claude-sonnet-4-5", {"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]}]}),
}


def outside_body(model, fields, max_tokens=100):
    body = {"model": model}
    body.update(fields)
    body["max_output_tokens" if "input" in fields or "prompt" in fields else "max_tokens"] = max_tokens
    return compact(body)


@pytest.mark.nginx(policy=reach_policy(monthly_usd="0.001"))
def test_a_stored_response_cannot_run_past_a_small_cap(nginx, redis, fake):
    """The issue's measurement: a key with monthly_usd 0.001 reserved $0.0000245 for a
    Responses request with previous_response_id and settled at $0.030. Its input is now
    reserved at the context window ($0.0192 for gpt-4o-mini): refused, never forwarded."""
    body = outside_body("gpt-4o-mini", OUTSIDE["responses-previous_response_id"][2])
    before = snapshot(redis)
    r = post(nginx.url, "/v1/responses", body, SECRETS["k1"], headers=adversary("gpt-4o-mini"))
    assert r.status_code == 402, r.text
    assert r.json()["error"]["code"] == "spend_limit_exceeded"
    assert fake.requests() == []
    redis_barrier(nginx)
    assert {k: v for k, v in snapshot(redis).items() if ":markers:" not in k and not k.endswith(":events")} == before


@pytest.mark.parametrize("case", sorted(OUTSIDE))
@pytest.mark.nginx(policy=reach_policy())
def test_input_outside_the_body_reserves_the_context_window(nginx, redis, fake, case):
    path, model, fields = OUTSIDE[case]
    body = outside_body(model, fields)
    r = post(nginx.url, path, body, SECRETS["k1"], headers=adversary(model))
    assert r.status_code == 200, r.text
    e = entry_of(nginx, r)
    price = price_of(model)
    reserved = cost_nanos((CONTEXT[model], max_input_rate(model)), (100, price["output"]))
    assert e["reserved_usd"] == format_usd(reserved), (e, case)
    billed = fake.requests()[0]["billed"]
    assert billed["input"] + billed["cache_write"] == CONTEXT[model], billed  # the provider filled the window
    assert e["settled_from"] == "usage"
    assert nanos(e["cost_usd"]) <= reserved, "settled %s above its reservation %s" % (e["cost_usd"], e["reserved_usd"])
    wait_request_settled(redis, r.headers["x-test-request-id"])


def test_the_same_parts_without_a_body_to_look_into_cost_no_more(nginx, redis, fake):
    """A plain request, billed the most the provider could: settled within its reservation."""
    for path, body in (("/v1/chat/completions", chat_body(max_tokens=50)), ("/v1/messages", messages_body())):
        model = "gpt-4o-mini" if "chat" in path else "claude-sonnet-4-5"
        r = post(nginx.url, path, body, SECRETS["k1"], headers=adversary(model))
        assert r.status_code == 200, r.text
        e = entry_of(nginx, r)
        assert nanos(e["cost_usd"]) <= nanos(e["reserved_usd"]), e


# ------------------------------------------------------------ refused: no bound holds

REFUSED = {
    "openai-web_search": ("/v1/responses", {"model": "gpt-4o-mini", "input": "news?", "tools": [
        {"type": "web_search"}]}, "runs at the provider"),
    "openai-file_search": ("/v1/responses", {"model": "gpt-4o-mini", "input": "find", "tools": [
        {"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "runs at the provider"),
    "openai-code_interpreter": ("/v1/responses", {"model": "gpt-4o-mini", "input": "run", "tools": [
        {"type": "code_interpreter", "container": {"type": "auto"}}]}, "runs at the provider"),
    "openai-chat-web_search_options": ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [],
                                                                "web_search_options": {}}, "web_search_options"),
    "anthropic-web_search": ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [],
                                              "tools": [{"type": "web_search_20250305", "name": "web_search",
                                                         "max_uses": 5}]}, "runs at the provider"),
    "anthropic-mcp_servers": ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [],
                                               "mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]},
                              "mcp_servers"),
    "openai-audio-out": ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [],
                                                  "modalities": ["text", "audio"],
                                                  "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    "openai-audio-in": ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]}, "audio"),
    "openai-priority": ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [],
                                                 "service_tier": "priority"}, "priority"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.nginx(policy=reach_policy())
def test_what_no_reservation_bounds_is_refused(nginx, redis, fake, case):
    path, body, why = REFUSED[case]
    surface = "anthropic" if path == "/v1/messages" else "openai"
    r = post(nginx.url, path, compact(body), SECRETS["k1"])
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and why in err["message"], err
    assert r.json() == error_envelope(surface, 400, "invalid_request", err["message"])
    redis_barrier(nginx)
    assert fake.requests() == [], "a refused request reached the provider"
    assert list(redis.scan_iter("*")) == [], "a refused request wrote to Redis"


@pytest.mark.nginx(policy=reach_policy())
def test_two_models_or_two_bounds_are_refused(nginx, redis, fake):
    """A provider that keeps the first of two keys would run another model, or
    another bound, than the one reserved."""
    for raw, field in ((b'{"model":"gpt-4o-mini","model":"o1-pro","messages":[],"max_tokens":5}', "model"),
                       (b'{"model":"gpt-4o-mini","messages":[],"max_tokens":100000,"max_tokens":5}', "max_tokens")):
        r = post(nginx.url, "/v1/chat/completions", raw, SECRETS["k1"])
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"] == "request body has more than one `%s`" % field
    r = post(nginx.url, "/v1/messages", messages_body(), SECRETS["k1"],
             headers={"anthropic-beta": "context-1m-2025-08-07"})
    assert r.status_code == 400 and "long-context" in r.json()["error"]["message"], r.text
    redis_barrier(nginx)
    assert fake.requests() == []


# ------------------------------------------------------------ bounds added and reserved

@pytest.mark.nginx(policy=reach_policy())
def test_a_request_without_an_output_bound_is_sent_with_the_one_reserved(nginx, redis, fake):
    pol = reach_policy()
    cases = [
        ("/v1/chat/completions", chat_body(max_tokens=None), "max_completion_tokens", 16384),
        ("/v1/responses", compact({"model": "gpt-4o-mini", "input": "hi"}), "max_output_tokens", 16384),
        ("/v1/completions", compact({"model": "odd-model", "prompt": "hi"}), "max_tokens",
         pol["default_max_output_tokens"]),
        # a null bound is no bound: replaced in place
        ("/v1/chat/completions", compact({"model": "gpt-4o-mini", "max_completion_tokens": None, "messages": []}),
         "max_completion_tokens", 16384),
    ]
    for i, (path, body, field, bound) in enumerate(cases):
        r = post(nginx.url, path, body, SECRETS["k1"])
        assert r.status_code == 200, r.text
        sent = json.loads(fake.requests()[i]["body"])
        assert sent[field] == bound, (path, sent)
        assert list(sent).count(field) == 1 and fake.requests()[i]["body"].count('"%s"' % field) == 1, sent
        e = entry_of(nginx, r)
        model = json.loads(body)["model"]
        assert e["reserved_usd"] == format_usd(cost_nanos((sent_length(fake, i), max_input_rate(model)),
                                                          (bound, price_of(model)["output"]))), e
    # Anthropic requires max_tokens (the provider refuses a request without it), embeddings have no output
    n = len(fake.requests())
    assert post(nginx.url, "/v1/messages", messages_body(max_tokens=None), SECRETS["k1"]).status_code == 200
    assert "max_tokens" not in json.loads(fake.requests()[n]["body"])
    embedding = compact({"model": "gpt-4o-mini", "input": "hi"})
    assert post(nginx.url, "/v1/embeddings", embedding, SECRETS["k1"]).status_code == 200
    assert json.loads(fake.requests()[n + 1]["body"]) == json.loads(embedding)


@pytest.mark.nginx(policy=reach_policy())
def test_tool_prompts_and_predictions_are_reserved(nginx, redis, fake):
    tools = compact({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [],
                     "tools": [{"name": "f", "input_schema": {"type": "object"}},
                               {"type": "computer_20250124", "name": "computer", "display_width_px": 1024,
                                "display_height_px": 768}]})
    r = post(nginx.url, "/v1/messages", tools, SECRETS["k1"], headers=adversary("claude-sonnet-4-5"))
    assert r.status_code == 200, r.text
    e = entry_of(nginx, r)
    sonnet = price_of("claude-sonnet-4-5")
    assert e["reserved_usd"] == format_usd(cost_nanos((len(tools) + 1024 + 2048, max_input_rate("claude-sonnet-4-5")),
                                                      (10, sonnet["output"])))
    assert fake.requests()[0]["billed"]["cache_write"] == len(tools) + 530 + 1234  # the provider's own prompts
    assert nanos(e["cost_usd"]) <= nanos(e["reserved_usd"]), e

    predicted = compact({"model": "gpt-4o-mini", "max_completion_tokens": 10, "messages": [],
                         "prediction": {"type": "content", "content": "x" * 3000}})
    r = post(nginx.url, "/v1/chat/completions", predicted, SECRETS["k1"], headers=adversary("gpt-4o-mini"))
    assert r.status_code == 200, r.text
    e = entry_of(nginx, r)
    mini = price_of("gpt-4o-mini")
    assert e["reserved_usd"] == format_usd(cost_nanos((len(predicted), max_input_rate("gpt-4o-mini")),
                                                      (10 + len(predicted), mini["output"])))
    assert nanos(e["cost_usd"]) <= nanos(e["reserved_usd"]), e


@pytest.mark.nginx(policy=reach_policy())
def test_one_hour_cache_writes_cost_twice_the_input(nginx, redis, fake):
    body = messages_body(max_tokens=100)
    r = post(nginx.url, "/v1/messages", body, SECRETS["k1"],
             headers={"x-fake-input-tokens": "10", "x-fake-output-tokens": "20", "x-fake-cache-write-tokens": "300",
                      "x-fake-cache-write-1h-tokens": "200"})
    assert r.status_code == 200, r.text
    p = price_of("claude-sonnet-4-5")
    cost = cost_nanos((10, p["input"]), (100, p["cache_write"]), (200, 2 * p["input"]), (20, p["output"]))
    wait_counters(redis, all_counter_keys(CHAINS["k1"]), cost)
    assert entry_of(nginx, r)["input_tokens"] == "310"


# ------------------------------------------------------------ what has no body, what is refused

@pytest.mark.nginx(policy=reach_policy())
def test_requests_without_a_body_are_identified_forwarded_and_counted_nowhere(nginx, redis, fake):
    for method, path in (("GET", "/v1/models"), ("HEAD", "/v1/models"), ("DELETE", "/v1/responses/resp_1"),
                         ("GET", "/v1/responses/resp_1")):
        missing = httpx.request(method, nginx.url + path, timeout=10)
        assert missing.status_code == 401, (method, path, missing.status_code)
        r = httpx.request(method, nginx.url + path, headers={"authorization": "Bearer " + SECRETS["k1"]}, timeout=10)
        assert r.status_code in (200, 404), (method, path, r.status_code)  # the provider's answer
        assert "x-spend-scope" not in r.headers
        e = entry_of(nginx, r)
        assert (e["decision"], e["key_id"]) == ("allow", "k1"), e
        assert e["reserved_usd"] in ("", "-") and e["cost_usd"] in ("", "-"), e  # unset
    # token counting is free at both providers: forwarded, body and all, counted nowhere
    r = post(nginx.url, "/v1/messages/count_tokens", messages_body(), SECRETS["k1"], key_header="x-api-key")
    assert r.status_code == 404, r.text  # (the fake has no such endpoint: it reached it)
    assert fake.requests()[-1]["path"] == "/v1/messages/count_tokens"
    assert [(q["method"], q["path"]) for q in fake.requests()][:4] == [
        ("GET", "/v1/models"), ("HEAD", "/v1/models"), ("DELETE", "/v1/responses/resp_1"),
        ("GET", "/v1/responses/resp_1")]
    redis_barrier(nginx)
    assert not any(":spend:" in k or ":reqs:" in k or ":reserved" in k for k in redis.scan_iter("*"))


@pytest.mark.nginx(policy=reach_policy())
def test_posts_whose_cost_nothing_bounds_are_refused(nginx, redis, fake):
    for path in ("/v1/fine_tuning/jobs", "/v1/batches", "/v1/images/generations", "/v1/audio/speech"):
        body = compact({"model": "gpt-4o-mini", "training_file": "file-abc", "input": "x"})
        assert post(nginx.url, path, body, None).status_code == 401  # who first
        r = post(nginx.url, path, body, SECRETS["k1"])
        assert r.status_code == 400, (path, r.text)
        assert "cannot bound the cost of POST %s" % path in r.json()["error"]["message"]
    redis_barrier(nginx)
    assert fake.requests() == []
    assert list(redis.scan_iter("*")) == []


@pytest.mark.nginx(policy=reach_policy())
def test_a_path_not_in_normal_form_is_refused(nginx, redis, fake):
    """NGINX decides the endpoint on the normalized path; the upstream gets the one
    the client sent: the two must be the same."""
    body = chat_body()
    for raw in ("/v1/chat/completions/../../v1/fine_tuning/jobs", "/v1/chat/%63ompletions", "/v1//chat/completions"):
        conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
        conn.request("POST", raw, body=body, headers={"authorization": "Bearer " + SECRETS["k1"],
                                                      "content-type": "application/json"})
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        assert resp.status == 400 and "normal form" in text, (raw, resp.status, text)
    redis_barrier(nginx)
    assert fake.requests() == []
