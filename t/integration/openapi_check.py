"""Checks management API answers against docs/openapi.yaml (SPEC section 7).

    from openapi_check import check
    r = client.post(prefix + "/keys", json={...})
    check("POST", "/keys", r.status_code, r.content)

`path` is relative to the API's location (what follows its prefix), with or without
the query string and a trailing "/". check() finds the operation whose path template
matches (a literal segment beats a template: "/keys/self" is never "/keys/{id}"), the
response documented for the status, and validates the JSON body against its schema
with Draft 2020-12, `#/components/schemas/...` refs resolved against the whole
document. It also checks what a schema cannot say: every `X_nanousd` / `X_usd` pair
of an answer holds the same amount, every `*_usd` string is rendered exactly as the
module renders amounts, and no JSON object repeats a name.

Some answers come before any operation is chosen, so they are documented once in
`#/components/responses` rather than per operation: a method a known path does not
take gets 405 (MethodNotAllowed), a path that names no call 404 (NotFound), and
either may instead get 401 (Unauthorized: the token is checked first) or 413
(PayloadTooLarge: a body over 64 KiB is refused before anything else).

Any mismatch raises AssertionError naming the method, path, status and the problem.
Needs only Debian's python3-yaml and python3-jsonschema (4.10: RefResolver).
"""

import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import jsonschema
import yaml

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
NANOS_PER_USD = 1_000_000_000

_cache = {}


def document():
    """The OpenAPI document, loaded once."""
    if "doc" not in _cache:
        with open(DOC_PATH, encoding="utf-8") as f:
            _cache["doc"] = yaml.safe_load(f)
    return _cache["doc"]


def resolver():
    """A RefResolver over the whole document, so that "#/components/..." resolves."""
    if "resolver" not in _cache:
        _cache["resolver"] = jsonschema.RefResolver(base_uri="", referrer=document())
    return _cache["resolver"]


def resolve_ref(ref):
    """The object a local "#/a/b" reference names (KeyError if there is none)."""
    if not ref.startswith("#/"):
        raise KeyError("not a local reference: %r" % ref)
    node = document()
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node[part]
    return node


def _deref(obj):
    while isinstance(obj, dict) and "$ref" in obj:
        obj = resolve_ref(obj["$ref"])
    return obj


def _templates():
    """[(template, regex)], the most specific first: fewer templated segments, and a
    literal segment before a templated one at the same position."""
    if "templates" not in _cache:
        entries = []
        for template in document()["paths"]:
            segments = template.strip("/").split("/")
            shape = tuple(1 if s.startswith("{") and s.endswith("}") else 0 for s in segments)
            pattern = "^/" + "/".join("[^/]+" if t else re.escape(s) for s, t in zip(segments, shape)) + "$"
            entries.append(((sum(shape), shape), template, re.compile(pattern)))
        entries.sort(key=lambda e: e[0])
        _cache["templates"] = [(template, regex) for _, template, regex in entries]
    return _cache["templates"]


def normalize(path):
    """"keys/k1/?x=1" -> "/keys/k1": no query or fragment, one leading "/", no trailing "/"."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


def find_path(path):
    """The path template that `path` (relative to the API location) matches, or None."""
    path = normalize(path)
    for template, regex in _templates():
        if regex.match(path):
            return template
    return None


# Answers given before a call is chosen: (the status of a path or method that names no
# call, and those that come before routing) -> the response of components.
_UNKNOWN_PATH = {404: "NotFound", 401: "Unauthorized", 413: "PayloadTooLarge"}
_UNKNOWN_METHOD = {405: "MethodNotAllowed", 401: "Unauthorized", 413: "PayloadTooLarge"}


def _component_response(name):
    return _deref({"$ref": "#/components/responses/" + name})


def find_response(method, path, status):
    """(where, response object) documented for this call and status; AssertionError if none."""
    where = "%s %s -> %s" % (method.upper(), path, status)
    template = find_path(path)
    if template is None:
        if status in _UNKNOWN_PATH:
            return where + " (unknown path)", _component_response(_UNKNOWN_PATH[status])
        raise AssertionError("%s: no path of docs/openapi.yaml matches %r (an unknown path answers only %s)"
                             % (where, normalize(path), ", ".join(map(str, sorted(_UNKNOWN_PATH)))))
    item = document()["paths"][template]
    operation = item.get(method.lower()) if method.lower() in HTTP_METHODS else None
    where = "%s %s (%s) -> %s" % (method.upper(), path, template, status)
    if operation is None:
        if status in _UNKNOWN_METHOD:
            return where, _component_response(_UNKNOWN_METHOD[status])
        allowed = ", ".join(m.upper() for m in HTTP_METHODS if m in item)
        raise AssertionError("%s: %s is not documented for %s (documented: %s)"
                             % (where, method.upper(), template, allowed))
    responses = operation.get("responses", {})
    for name in (str(status), "%dXX" % (status // 100), "default"):
        if name in responses:
            return where, _deref(responses[name])
    raise AssertionError("%s: status %s is undocumented for %s %s (documented: %s)"
                         % (where, status, method.upper(), template, ", ".join(sorted(responses))))


def _no_duplicates(pairs):
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError("the object repeats %s" % ", ".join(repeated))
    return dict(pairs)


def _parse(where, body):
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as e:
            raise AssertionError("%s: the body is not UTF-8: %s" % (where, e)) from None
    if isinstance(body, str):
        try:
            return json.loads(body, object_pairs_hook=_no_duplicates)
        except ValueError as e:
            raise AssertionError("%s: the body is not JSON (%s): %r" % (where, e, body[:300])) from None
    return body


def format_usd(nanos):
    """As the module renders an amount: at least two fractional digits, trailing zeros
    beyond those trimmed (money.h format_usd)."""
    sign = "-" if nanos < 0 else ""
    whole, fraction = divmod(abs(nanos), NANOS_PER_USD)
    digits = ("%09d" % fraction).rstrip("0")
    return "%s%d.%s" % (sign, whole, digits.ljust(2, "0"))


def _amount_problems(value, at="$"):
    """Amount pairs that disagree and *_usd strings not rendered as the module renders."""
    problems = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            problems += _amount_problems(item, "%s[%d]" % (at, i))
    elif isinstance(value, dict):
        for name, item in value.items():
            here = "%s.%s" % (at, name)
            if name == "events":  # stream fields are free-form strings
                continue
            if name.endswith("_usd") and isinstance(item, str):
                try:
                    exact = Decimal(item)
                    canonical = format_usd(int(exact * NANOS_PER_USD))
                    if exact * NANOS_PER_USD != int(exact * NANOS_PER_USD) or canonical != item:
                        problems.append("%s is %r, rendered %r by the module" % (here, item, canonical))
                except InvalidOperation:
                    problems.append("%s is %r, not a decimal amount" % (here, item))
            if name.endswith("_nanousd"):
                twin = name[: -len("_nanousd")] + "_usd"
                if twin in value:
                    usd = value[twin]
                    if (item is None) != (usd is None):
                        problems.append("%s is %r but %s is %r" % (here, item, twin, usd))
                    elif item is not None:
                        if type(item) is not int:
                            problems.append("%s is %r, not an integer" % (here, item))
                        elif usd != format_usd(item):
                            problems.append("%s is %d but %s is %r (expected %r)"
                                            % (here, item, twin, usd, format_usd(item)))
            problems += _amount_problems(item, here)
    return problems


def _media_type(headers):
    """The Content-Type of `headers` without its parameters, lower case ("" none)."""
    if headers is None:
        return ""
    for name, value in headers.items():
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


def _csv_problems(text):
    """In a CSV answer (a header row, then rows), every X_usd / X_nanousd column pair
    of a row holds the same amount, rendered as the module renders amounts."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return ["no header row"]
    header = lines[0].split(",")
    problems = []
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split(",")
        if len(cells) != len(header):
            problems.append("line %d has %d cells, the header %d" % (n, len(cells), len(header)))
            continue
        row = dict(zip(header, cells))
        for name, value in row.items():
            if name.endswith("_nanousd") and name[: -len("_nanousd")] + "_usd" in row:
                twin = name[: -len("_nanousd")] + "_usd"
                try:
                    nanos = int(value)
                except ValueError:
                    problems.append("line %d: %s is %r, not an integer" % (n, name, value))
                    continue
                if row[twin] != format_usd(nanos):
                    problems.append("line %d: %s is %d but %s is %r (expected %r)"
                                    % (n, name, nanos, twin, row[twin], format_usd(nanos)))
    return problems


def check(method, path, status, body, headers=None):
    """Asserts that `body` (bytes, str, or already parsed JSON) is what docs/openapi.yaml
    documents for `method` `path` answering `status`. `headers` (optional, a mapping)
    is checked for the headers the response requires (405: Allow). A body whose
    Content-Type (in `headers`) is text/csv is checked against the documented text/csv
    schema (a string: its pattern), and its amount columns as JSON's amounts are."""
    where, response = find_response(method, path, status)
    content = response.get("content") or {}
    media = content.get("application/json")
    if headers is not None:
        present = {k.lower() for k in headers.keys()}
        for name, header in (response.get("headers") or {}).items():
            header = _deref(header)
            if header.get("required") and name.lower() not in present:
                raise AssertionError("%s: the response lacks the %s header" % (where, name))
    if _media_type(headers) == "text/csv":
        csv = content.get("text/csv")
        if csv is None:
            raise AssertionError("%s: text/csv is not documented for this response (documented: %s)"
                                 % (where, ", ".join(sorted(content)) or "no body"))
        text = bytes(body).decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
        if not isinstance(text, str):
            raise AssertionError("%s: a text/csv body must be text, got %r" % (where, type(body)))
        errors = list(jsonschema.Draft202012Validator(csv.get("schema", {}), resolver=resolver()).iter_errors(text))
        if errors:
            raise AssertionError("%s: the CSV does not match its schema: %s\nbody: %r"
                                 % (where, jsonschema.exceptions.best_match(errors).message[:300], text[:2000]))
        problems = _csv_problems(text)
        if problems:
            raise AssertionError("%s: CSV amounts: %s\nbody: %r" % (where, "; ".join(problems), text[:2000]))
        return
    if media is None:
        if body not in (None, b"", ""):
            raise AssertionError("%s: the documented response has no body, got %r" % (where, body))
        return
    if body is None or body in (b"", ""):
        raise AssertionError("%s: the documented response has a JSON body, got none" % where)
    instance = _parse(where, body)
    schema = media.get("schema", {})
    validator = jsonschema.Draft202012Validator(schema, resolver=resolver())
    errors = list(validator.iter_errors(instance))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        at = "$" + "".join("[%d]" % p if isinstance(p, int) else ".%s" % p for p in best.absolute_path)
        raise AssertionError("%s: the body does not match %s: at %s: %s (%d error%s)\nbody: %s"
                             % (where, schema.get("$ref", "its schema"), at, best.message, len(errors),
                                "" if len(errors) == 1 else "s", json.dumps(instance)[:2000]))
    problems = _amount_problems(instance)
    if problems:
        raise AssertionError("%s: amounts: %s\nbody: %s" % (where, "; ".join(problems), json.dumps(instance)[:2000]))
