"""Property: no settlement exceeds its reservation (issue 16).

Random request bodies, on both surfaces and every metered endpoint, plain and
streamed, with and without input outside the body, tools, predictions, cache
controls, missing or null output bounds and choices; the fake provider bills each
the most it could, or a random amount within that (t/fake_billing.py: the
providers' own rules, not the module's estimate), with a model whose own output
limit is far above the policy's. Requests that no reservation can bound (provider
tools, audio, priority, two models) must be refused and never reach the provider;
every other one must settle at or below what it reserved, and the counters must
hold exactly the settled costs.

SPEND_CAP_PROPERTY_SEED repeats a run; SPEND_CAP_PROPERTY_CASES sets its length."""

import json
import os
import random

import pytest

from support import (SECRETS, all_counter_keys, default_policy, format_usd, post, read_counters, set_limits,
                     usd_nanos, wait_settled)

CASES = int(os.environ.get("SPEND_CAP_PROPERTY_CASES", "150"))
SEED = int(os.environ.get("SPEND_CAP_PROPERTY_SEED") or random.SystemRandom().randrange(1 << 30))
PROVIDER_MAX_OUTPUT = 100_000  # the real model's own limit: above every bound the policy knows
CONTEXT = {"gpt-4o-mini": 128000, "odd-model": 50000, "claude-sonnet-4-5": 200000}


def property_policy():
    pol = default_policy()
    pol["models"]["gpt-4o-mini"]["context_window"] = CONTEXT["gpt-4o-mini"]
    pol["models"]["odd-model"]["context_window"] = CONTEXT["odd-model"]  # and no max_output_tokens
    pol["default_context_window"] = CONTEXT["claude-sonnet-4-5"]
    high = {"daily_usd": "100000", "monthly_usd": "100000", "lifetime_usd": "100000"}
    for scope in ("key", "project", "org"):
        set_limits(pol, scope, high)
    return pol


TEXT = "The quick brown fox jumps over the lazy dog. "


def text(rng):
    return (TEXT * rng.randint(0, 6))[:rng.randint(0, 200)] or "hi"


def outside_openai_chat(rng):
    return rng.choice([
        {"type": "image_url", "image_url": {"url": "https://example.com/%d.png" % rng.randint(0, 9)}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "file", "file": {"file_id": "file-%d" % rng.randint(0, 9)}},
        {"type": "file", "file": {"file_data": "JVBERi0xLjQ=", "filename": "a.pdf"}},
    ])


def outside_responses(rng):
    return rng.choice([
        ("previous_response_id", "resp_%d" % rng.randint(0, 99)),
        ("conversation", "conv_%d" % rng.randint(0, 99)),
        ("conversation", {"id": "conv_1"}),
        ("prompt", {"id": "pmpt_1", "variables": {"x": "y"}}),
        ("part", {"type": "input_image", "image_url": "https://example.com/x.png"}),
        ("part", {"type": "input_file", "file_id": "file-1"}),
        ("item", {"type": "item_reference", "id": "msg_1"}),
        ("item", {"type": "reasoning", "id": "rs_1", "summary": []}),
    ])


def outside_anthropic(rng):
    return rng.choice([
        {"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "document", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}},
    ])


def refusal(rng, surface):
    """A field no reservation bounds: (name, value)."""
    if surface == "anthropic":
        return rng.choice([("tools", [{"type": "web_search_20250305", "name": "web_search"}]),
                           ("tools", [{"type": "code_execution_20250825", "name": "code_execution"}]),
                           ("mcp_servers", [{"type": "url", "url": "https://x", "name": "x"}])])
    return rng.choice([("tools", [{"type": "web_search"}]), ("tools", [{"type": "file_search"}]),
                       ("service_tier", "priority"), ("modalities", ["text", "audio"]),
                       ("web_search_options", {})])


def output_bound(rng, name, most):
    """A random way of giving (or not) the output bound."""
    choice = rng.random()
    if choice < 0.3:
        return {}
    if choice < 0.4:
        return {name: None}
    return {name: rng.randint(1, most)}


def generate(rng):
    """(path, body dict, model, refused, headers)."""
    endpoint = rng.choice(["chat", "chat", "completions", "embeddings", "responses", "responses", "messages",
                           "messages"])
    refused = rng.random() < 0.12
    if endpoint == "messages":
        model = "claude-sonnet-4-5"
        content = [{"type": "text", "text": text(rng)}]
        if rng.random() < 0.3:
            content.append(outside_anthropic(rng))
        if rng.random() < 0.3:
            content[0]["cache_control"] = {"type": "ephemeral", "ttl": rng.choice(["5m", "1h"])}
        body = {"model": model, "max_tokens": rng.randint(1, 64000), "messages": [{"role": "user", "content": content}]}
        if rng.random() < 0.3:
            body["system"] = [{"type": "text", "text": text(rng)}]
        if rng.random() < 0.3:
            tools = [{"name": "f", "input_schema": {"type": "object"}}]
            if rng.random() < 0.5:
                tools.append({"type": "bash_20250124", "name": "bash"})
            body["tools"] = tools
        path, surface = "/v1/messages", "anthropic"
    else:
        model = rng.choice(["gpt-4o-mini", "odd-model"])
        most = 16384 if model == "gpt-4o-mini" else 4096
        surface = "openai"
        if endpoint == "chat":
            content = text(rng)
            if rng.random() < 0.3:
                content = [{"type": "text", "text": content}, outside_openai_chat(rng)]
            body = {"model": model, "messages": [{"role": "user", "content": content}]}
            body.update(output_bound(rng, rng.choice(["max_tokens", "max_completion_tokens"]), most))
            if rng.random() < 0.3:
                body["n"] = rng.randint(1, 4)
            if rng.random() < 0.2:
                body["prediction"] = {"type": "content", "content": text(rng) * 3}
            if rng.random() < 0.2:
                body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
            path = "/v1/chat/completions"
        elif endpoint == "completions":
            body = {"model": model, "prompt": text(rng)}
            body.update(output_bound(rng, "max_tokens", most))
            if rng.random() < 0.3:
                body["n"] = rng.randint(1, 3)
                body["best_of"] = body["n"] + rng.randint(0, 2)
            path = "/v1/completions"
        elif endpoint == "embeddings":
            body = {"model": model, "input": rng.choice([text(rng), [text(rng), text(rng)]])}
            path = "/v1/embeddings"
        else:
            body = {"model": model, "input": text(rng)}
            if rng.random() < 0.35:
                kind, value = outside_responses(rng)
                if kind in ("part", "item"):
                    item = value if kind == "item" else {"role": "user", "content": [
                        {"type": "input_text", "text": text(rng)}, value]}
                    body["input"] = [item]
                else:
                    body[kind] = value
            body.update(output_bound(rng, "max_output_tokens", most))
            if rng.random() < 0.2:
                body["tools"] = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
            path = "/v1/responses"
    if endpoint != "embeddings" and rng.random() < 0.4:
        body["stream"] = True
    if refused:
        name, value = refusal(rng, surface)
        body[name] = value
    headers = {"x-fake-usage": rng.choice(["max", "random"]), "x-fake-seed": str(rng.randrange(1 << 30)),
               "x-fake-context-window": str(CONTEXT[model]), "x-fake-model-max-output": str(PROVIDER_MAX_OUTPUT)}
    return path, body, model, refused, headers


@pytest.mark.nginx(policy=property_policy())
def test_no_settlement_exceeds_its_reservation(nginx, redis, fake):
    rng = random.Random(SEED)
    allowed, costs = [], 0
    for i in range(CASES):
        path, body, model, refused, headers = generate(rng)
        raw = json.dumps(body, separators=(",", ":")).encode()
        where = "case %d of seed %d (SPEND_CAP_PROPERTY_SEED=%d): POST %s %s" % (i, SEED, SEED, path, raw[:600])
        r = post(nginx.url, path, raw, SECRETS["k1"], headers=headers, timeout=60)
        if refused:
            assert r.status_code == 400, "%s\nshould be refused, got %d %s" % (where, r.status_code, r.text)
            continue
        assert r.status_code == 200, "%s\n-> %d %s" % (where, r.status_code, r.text[:500])
        r.read()
        e = nginx.log_entry(r.headers["x-test-request-id"])
        reserved, cost = usd_nanos(e["reserved_usd"]), usd_nanos(e["cost_usd"])
        billed = fake.requests()[len(allowed)]["billed"]
        assert e["settled_from"] == "usage", "%s\n%s" % (where, e)
        assert cost <= reserved, "%s\nsettled %s above its reservation %s; the provider billed %s" % (
            where, e["cost_usd"], e["reserved_usd"], billed)
        allowed.append((reserved, cost))
        costs += cost
    assert len(fake.requests()) == len(allowed), "a refused request reached the provider"
    # every settlement landed, exactly: the key's lifetime spend is the sum of the costs
    wait_settled(redis, len(allowed))
    spent = read_counters(redis, all_counter_keys({"key": "k1", "project": "acme-prod", "org": "acme"}))
    lifetime = [v for k, v in spent.items() if k.endswith(":life")]
    assert set(lifetime) == {costs}, (format_usd(costs), spent)
    worst = max(cost / reserved for reserved, cost in allowed if reserved)
    print("property seed %d: %d requests allowed, %d refused; the highest settled/reserved %.4f"
          % (SEED, len(allowed), CASES - len(allowed), worst))
