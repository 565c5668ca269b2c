"""The most a real provider could bill for a request it received: the fake
provider's adversarial usage (x-fake-usage: max | random) reports up to this.

It is written from the providers' documented behaviour, not from the module's
estimate, so that a request the module under-reserves shows up as a settlement
above its reservation:

- input: a token is at least one byte of what was sent; a request whose input
  is not all in its body (a stored response or conversation, a stored prompt,
  an image, a file, a document, audio, an item by reference) may fill the
  model's context window; tool definitions add the provider's tool-use prompt
  (Anthropic: up to 530 tokens, and up to 1,234 for each of its own tools).
- output: the request's own bound, as the provider reads it (the largest of the
  fields it takes; Completions' default is 16), times OpenAI's `n` / `best_of`;
  a request with no bound may run to the model's own maximum
  (x-fake-model-max-output, default 100,000); a rejected prediction is billed
  as output, up to the prediction's length.
"""

import json
import random

ANTHROPIC_TOOL_PROMPT = 530
ANTHROPIC_OWN_TOOL = 1234          # computer use: 735 + 499 of system prompt, the largest
DEFAULT_MODEL_MAX_OUTPUT = 100_000
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

# Content parts whose billed input is not (all) in the body.
OUTSIDE_PART_TYPES = {"image_url", "input_image", "image", "file", "input_file", "document", "item_reference",
                      "container_upload", "input_audio", "audio", "computer_screenshot", "computer_call_output"}


def _outside_in(value):
    """True when a content tree names input it does not hold."""
    if isinstance(value, list):
        return any(_outside_in(v) for v in value)
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    if kind in OUTSIDE_PART_TYPES:
        return True
    if kind == "reasoning" and not value.get("encrypted_content"):
        return True  # a stored reasoning item, fetched by its id
    return any(_outside_in(v) for v in value.values())


def input_outside_body(req):
    if req.get("previous_response_id") is not None or req.get("conversation") is not None:
        return True
    if isinstance(req.get("prompt"), dict):
        return True  # a stored prompt (Responses)
    return any(_outside_in(req.get(k)) for k in ("messages", "input", "system"))


def tool_prompt_tokens(req, anthropic):
    tools = req.get("tools")
    if not isinstance(tools, list) or not tools:
        return 0
    total = ANTHROPIC_TOOL_PROMPT if anthropic else 0
    for tool in tools:
        kind = tool.get("type", "") if isinstance(tool, dict) else ""
        if kind and kind not in ("function", "custom"):
            total += ANTHROPIC_OWN_TOOL
    return total


def _int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def output_bound(path, req, model_max):
    if path.endswith("/embeddings"):
        return 0
    if path.endswith("/chat/completions"):
        given = [_int(req.get(k)) for k in ("max_tokens", "max_completion_tokens")]
    elif path.endswith("/completions"):
        given = [_int(req.get("max_tokens"))]
        if given == [None]:
            given = [COMPLETIONS_DEFAULT_MAX_TOKENS]
    elif path.endswith("/responses"):
        given = [_int(req.get("max_output_tokens"))]
    else:  # Anthropic Messages: max_tokens is required
        given = [_int(req.get("max_tokens"))]
    given = [g for g in given if g is not None]
    bound = max(given) if given else model_max
    choices = max(_int(req.get("n")) or 1, _int(req.get("best_of")) or 1)
    bound *= choices
    prediction = req.get("prediction")
    if prediction is not None:
        bound += len(json.dumps(prediction).encode())
    return bound


def bounds(path, body, req, context_window, model_max=DEFAULT_MODEL_MAX_OUTPUT):
    """(most input tokens, most output tokens) a provider could bill."""
    anthropic = path.endswith("/messages")
    if input_outside_body(req):
        most_input = context_window
    else:
        most_input = len(body) + tool_prompt_tokens(req, anthropic)
    return most_input, output_bound(path, req, model_max)


def usage_tokens(mode, seed, most_input, most_output, anthropic):
    """Token counts by kind, within the bounds: `max` takes every bound and puts
    the input in its dearest kind (Anthropic: one-hour cache writes); `random`
    draws each part (seeded), from 0 to the bound."""
    if mode == "max":
        if anthropic:
            return {"input": 0, "cache_write": most_input, "cache_write_1h": most_input, "cached": 0,
                    "output": most_output, "reasoning": 0}
        return {"input": most_input, "cache_write": 0, "cache_write_1h": 0, "cached": 0,
                "output": most_output, "reasoning": 0}
    rng = random.Random(seed)
    total_in = rng.randint(0, most_input)
    cached = rng.randint(0, total_in)
    output = rng.randint(0, most_output)
    if anthropic:
        write = rng.randint(0, total_in - cached)
        one_hour = rng.randint(0, write)
        return {"input": total_in - cached - write, "cache_write": write, "cache_write_1h": one_hour,
                "cached": cached, "output": output, "reasoning": 0}
    return {"input": total_in, "cache_write": 0, "cache_write_1h": 0, "cached": cached, "output": output,
            "reasoning": rng.randint(0, output)}
