"""The management API as the tests call it: every answer checked against
docs/openapi.yaml. The fixtures admin_factory and api (conftest.py) give an
NGINX with the API at PREFIX."""

import json

import httpx

from openapi_check import check
from support import chat_body, post

TOKEN = "admin-token-for-tests-0123456789"
PREFIX = "/spend-cap"


class Api:
    """Calls the API of one NGINX; every answer is checked against the OpenAPI document."""

    def __init__(self, nginx, token=TOKEN):
        self.nginx = nginx
        self.token = token

    def call(self, method, path, body=None, token=None, raw=None, headers=None):
        h = {"authorization": "Bearer " + (token if token is not None else self.token)}
        if token == "":
            h = {}
        h.update(headers or {})
        content = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if content is not None:
            h["content-type"] = "application/json"
        r = httpx.request(method, self.nginx.url + PREFIX + path, content=content, headers=h, timeout=10)
        check(method, path, r.status_code, r.content, headers=r.headers)
        return r

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


def chat(nginx, secret, **headers):
    return post(nginx.url, "/v1/chat/completions", chat_body(max_tokens=100), secret, headers=headers)
