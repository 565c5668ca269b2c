"""spend_cap_dashboard (SPEC section 11) through a real NGINX: the page with its
location's API prefix, the files of ui/ (vendor/ served flat) from memory, the
headers of every answer, ETags and If-None-Match, the methods, and `nginx -t`
naming a bad prefix."""

from pathlib import Path

import httpx
import pytest

from test_config import assert_config

UI = Path(__file__).resolve().parents[2] / "ui"
DASHBOARD = "location /spend-cap/ui/ { spend_cap_dashboard /spend-cap/; }"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
EVERY_ANSWER_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
    "VERSION.md": "text/plain; charset=utf-8",
}


def page_for(prefix):
    return (UI / "index.html").read_bytes().replace(b"@API_PREFIX@", prefix.encode())


def ui_files():
    """{basename: bytes} of every file under ui/ (what the module embeds)."""
    return {p.name: p.read_bytes() for p in UI.rglob("*") if p.is_file() and not p.name.startswith(".")}


def assert_every_answer_header(r):
    for name, value in EVERY_ANSWER_HEADERS.items():
        assert r.headers.get(name) == value, (r.status_code, name, r.headers)


@pytest.fixture
def dashboard(nginx_factory, redis, fake):
    return nginx_factory(server_extra=DASHBOARD)


def test_the_page_has_the_prefix(dashboard):
    for path in ("/spend-cap/ui/", "/spend-cap/ui/index.html"):
        r = httpx.get(dashboard.url + path)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.content == page_for("/spend-cap/")
        assert b'<meta name="spend-cap-api" content="/spend-cap/">' in r.content
        assert b"@API_PREFIX@" not in r.content
        assert r.headers["etag"].startswith('"') and len(r.headers["etag"]) == 18
        assert_every_answer_header(r)


def test_every_file_is_served_flat_with_its_type(dashboard):
    files = ui_files()
    for name in ("app.js", "style.css", "favicon.svg", "uPlot.iife.min.js", "uPlot.min.css", "LICENSE"):
        assert name in files, name
    for name, body in files.items():
        if name == "index.html":
            continue
        r = httpx.get(dashboard.url + "/spend-cap/ui/" + name)
        assert r.status_code == 200, (name, r.text)
        assert r.content == body, name
        if name in TYPES:
            assert r.headers["content-type"] == TYPES[name], name
        assert int(r.headers["content-length"]) == len(body)
        assert_every_answer_header(r)


def test_etag_revalidation(dashboard):
    for path in ("/spend-cap/ui/", "/spend-cap/ui/uPlot.iife.min.js"):
        first = httpx.get(dashboard.url + path)
        etag = first.headers["etag"]
        assert httpx.get(dashboard.url + path).headers["etag"] == etag  # stable
        same = httpx.get(dashboard.url + path, headers={"If-None-Match": etag})
        assert same.status_code == 304
        assert same.content == b""
        assert same.headers["etag"] == etag
        assert_every_answer_header(same)
        for matching in ('"x", ' + etag, "W/" + etag, "*"):
            assert httpx.get(dashboard.url + path, headers={"If-None-Match": matching}).status_code == 304, matching
        changed = httpx.get(dashboard.url + path, headers={"If-None-Match": '"0000000000000000"'})
        assert changed.status_code == 200
        assert changed.content == first.content
    assert (httpx.get(dashboard.url + "/spend-cap/ui/app.js").headers["etag"]
            != httpx.get(dashboard.url + "/spend-cap/ui/style.css").headers["etag"])


def test_head_get_only_and_unknown_names(dashboard):
    head = httpx.head(dashboard.url + "/spend-cap/ui/app.js")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len((UI / "app.js").read_bytes())
    assert_every_answer_header(head)

    for method in ("POST", "PUT", "DELETE"):
        r = httpx.request(method, dashboard.url + "/spend-cap/ui/", content=b"{}")
        assert r.status_code == 405, method
        assert r.headers["allow"] == "GET, HEAD"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert_every_answer_header(r)

    for path in ("/spend-cap/ui/nope.js", "/spend-cap/ui/vendor", "/spend-cap/ui/index.htm"):
        r = httpx.get(dashboard.url + path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert "etag" not in r.headers
        assert_every_answer_header(r)


def test_each_location_has_its_own_page(nginx_factory, redis, fake):
    ng = nginx_factory(server_extra=DASHBOARD + "\nlocation /other/ui/ { spend_cap_dashboard /other-api; }")
    one = httpx.get(ng.url + "/spend-cap/ui/")
    other = httpx.get(ng.url + "/other/ui/")
    assert other.content == page_for("/other-api/")  # the trailing '/' added
    assert b'<meta name="spend-cap-api" content="/other-api/">' in other.content
    assert one.content == page_for("/spend-cap/")
    assert one.headers["etag"] != other.headers["etag"]
    assert httpx.get(ng.url + "/other/ui/app.js").content == (UI / "app.js").read_bytes()


def test_the_dashboard_never_runs_the_spend_cap(nginx_factory, redis, fake):
    """An http-level `spend_cap on` does not ask the dashboard's callers for an API key."""
    ng = nginx_factory(http_extra="spend_cap on;", server_extra=DASHBOARD)
    r = httpx.get(ng.url + "/spend-cap/ui/")
    assert r.status_code == 200, r.text
    assert r.content == page_for("/spend-cap/")


@pytest.mark.parametrize("directive,reason", [
    ('spend_cap_dashboard "a b";', "spend_cap_dashboard"),
    ("spend_cap_dashboard relative/;", "must start with '/'"),
    ('spend_cap_dashboard "/a<b/";', "spend_cap_dashboard"),
    ('spend_cap_dashboard "/x\\"y/";', "spend_cap_dashboard"),
    ("spend_cap_dashboard /%s/;" % ("a" * 300), "longer than 256 bytes"),
    ("spend_cap_dashboard;", "invalid number of arguments"),
    ("spend_cap_dashboard /a/ /b/;", "invalid number of arguments"),
    ("spend_cap_dashboard /a/; spend_cap_dashboard /b/;", "is duplicate"),
    ("proxy_pass http://127.0.0.1:1; spend_cap_dashboard /a/;", "another directive already answers"),
])
def test_a_bad_directive_fails_nginx_t(nginx_factory, directive, reason):
    ng = nginx_factory(start=False, server_extra="location /spend-cap/ui/ { %s }" % directive)
    assert_config(ng, reason)
    res = ng.test_config()
    assert "spend_cap_dashboard" in res.stderr, res.stderr


def test_only_a_location_takes_it(nginx_factory):
    assert_config(nginx_factory(start=False, server_extra="spend_cap_dashboard /spend-cap/;"),
                  "is not allowed here")
    assert_config(nginx_factory(start=False, server_extra=DASHBOARD), None)
