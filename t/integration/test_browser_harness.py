"""The browser harness (browser_support.Browser, the `browser` fixture) against a tiny
static site on a loopback http.server: console errors, requests and foreign
requests, storage, downloads, screenshots, horizontal overflow and the failure
screenshot. The dashboard tests rely on each of these catching what it claims."""

import base64
import functools
import http.server
import os
import subprocess
import threading

import pytest

import support
from browser_support import origin_of, png_size, safe_name, screenshot_dir, wait_until

INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title>
<link rel="icon" href="data:,">
<style>body { margin: 0; font-family: sans-serif; } #wide { width: 600px; height: 20px; background: #c33; }</style>
</head><body>
<p id="greeting">loading</p>
<button id="boom" type="button">boom</button>
<button id="make-wide" type="button">wide</button>
<input id="name" value="initial">
<a id="csv" download="report.csv" href="data:text/csv;charset=utf-8,day%2Cusd%0A2026-01-01%2C1.50%0A">csv</a>
<a id="blob" href="#">blob</a>
<p id="spinner">working</p>
<script src="/app.js"></script>
</body></html>
"""

APP = """
console.log('calm');
console.warn('careful');
fetch('/data.json').then(r => r.json()).then(d => {
  document.getElementById('greeting').textContent = d.greeting;
  document.getElementById('spinner').style.display = 'none';
});
document.getElementById('boom').addEventListener('click', () => console.error('boom'));
document.getElementById('make-wide').addEventListener('click', () => {
  const d = document.createElement('div'); d.id = 'wide'; document.body.appendChild(d);
});
document.getElementById('blob').addEventListener('click', e => {
  e.preventDefault();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob(['{"spent": "1.50"}'], {type: 'application/json'}));
  a.download = 'usage.json';
  document.body.appendChild(a); a.click(); a.remove();
});
"""

FOREIGN = """<!doctype html><html><head><link rel="icon" href="data:,"></head><body>
<p id="here">here</p><img src="http://127.0.0.2:1/x.png" alt="">
</body></html>
"""

LONG = """<!doctype html><html><head><link rel="icon" href="data:,">
<style>body { margin: 0; } div { height: 1000px; border-bottom: 4px solid #333; } #last { background: #c33; }</style></head>
<body><div>1</div><div>2</div><div id="last">3</div></body></html>
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def site(tmp_path):
    """http://127.0.0.1:<port> serving INDEX, /app.js, /data.json, /foreign.html, /long.html."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(INDEX)
    (root / "app.js").write_text(APP)
    (root / "data.json").write_text('{"greeting": "hello from json"}')
    (root / "foreign.html").write_text(FOREIGN)
    (root / "long.html").write_text(LONG)
    port = support.free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                             functools.partial(_Quiet, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % port
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def shots(tmp_path, monkeypatch):
    d = tmp_path / "shots"
    monkeypatch.setenv("SPEND_CAP_SCREENSHOTS", str(d))
    return d


def pixel(browser, png, x, y):
    """[r, g, b, a] of a pixel of a PNG file, decoded by the browser (no PIL here)."""
    return browser.js("""const img = new Image();
        img.src = 'data:image/png;base64,' + arguments[0];
        return img.decode().then(() => {
          const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
          const g = c.getContext('2d'); g.drawImage(img, 0, 0);
          return Array.from(g.getImageData(arguments[1], arguments[2], 1, 1).data);
        });""", base64.b64encode(png.read_bytes()).decode(), x, y)


def messages(entries):
    return [e["message"] for e in entries]


def test_console_errors_catch_console_error_only_after_the_click(browser, site):
    browser.open(site + "/")
    browser.wait_for("#greeting", text="hello from json")
    # console.log and console.warn ran at load: neither is an error
    assert wait_until(lambda: any("careful" in m for m in messages(browser.console_entries())), 30)
    before = browser.console_errors()
    assert before == [], before
    browser.click("#boom")
    errors = []
    assert wait_until(lambda: errors.extend(browser.console_errors()) or errors, 30), "no console error after the click"
    assert len(errors) == 1 and '"boom"' in errors[0]["message"], errors
    assert browser.console_errors() == []  # each error is reported once


def test_requested_urls_and_foreign_requests(browser, site):
    browser.open(site + "/")
    browser.wait_for("#greeting", text="hello from json")
    assert wait_until(lambda: site + "/data.json" in browser.requested_urls(), 30), browser.requested_urls()
    urls = browser.requested_urls()
    assert site + "/" in urls and site + "/app.js" in urls, urls
    assert browser.foreign_requests(site) == []

    browser.open(site + "/foreign.html")
    browser.wait_for("#here")
    assert wait_until(lambda: browser.foreign_requests(site), 30) == ["http://127.0.0.2:1/x.png"]
    assert site + "/foreign.html" in browser.requested_urls()


def test_origin_of():
    assert origin_of("http://127.0.0.1:8080/a?b") == "http://127.0.0.1:8080"
    assert origin_of("http://Example.com/") == "http://example.com:80"
    assert origin_of("https://example.com:443/x") == origin_of("https://example.com/y")
    assert origin_of("http://127.0.0.1:8080/") != origin_of("http://127.0.0.1:8081/")
    assert origin_of("data:text/plain,x") == "data:"


def test_session_and_local_storage_and_cookies(browser, site):
    browser.open(site + "/")
    assert browser.session_storage() == {}
    browser.js("sessionStorage.setItem('token', arguments[0]); localStorage.setItem('theme', 'dark');"
               "document.cookie = 'seen=1; path=/';", "s3cret")
    assert browser.session_storage() == {"token": "s3cret"}
    assert browser.local_storage() == {"theme": "dark"}
    assert [(c["name"], c["value"]) for c in browser.cookies()] == [("seen", "1")]


def test_waits_fill_and_text(browser, site):
    browser.open(site + "/")
    browser.wait_gone("#spinner")  # hidden once the fetch answered
    assert browser.text("#greeting") == "hello from json"
    assert browser.wait_text("#greeting", lambda t: t.startswith("hello")) == "hello from json"
    browser.fill("#name", "acme")
    assert browser.js("return document.getElementById('name').value") == "acme"
    with pytest.raises(Exception, match="no visible #absent"):
        browser.wait_for("#absent", timeout=0.5)
    with pytest.raises(Exception, match="did not satisfy"):
        browser.wait_text("#greeting", lambda t: t == "other", timeout=0.5)


def test_downloads_land_as_files(browser, site, tmp_path):
    d = browser.downloads(tmp_path / "downloads")
    browser.open(site + "/")
    browser.click("#csv")
    csv = browser.wait_download(".csv")
    assert csv.parent == d and csv.name == "report.csv"
    assert csv.read_text() == "day,usd\n2026-01-01,1.50\n"
    browser.click("#blob")
    js = browser.wait_download(".json")
    assert js.name == "usage.json" and js.read_text() == '{"spent": "1.50"}'
    assert not any(p.name.endswith(".crdownload") for p in d.iterdir())


def test_screenshots_are_pngs(browser, site, shots):
    browser.resize(800, 600)
    browser.open(site + "/long.html")
    browser.wait_for("#last", visible=False)
    view = browser.screenshot("view port")
    assert view == shots / "view_port.png"
    assert png_size(view) == (800, 600)
    full = browser.full_page_screenshot("whole")
    w, h = png_size(full)
    assert (w, h) == (800, 3012)  # the viewport's width, all three 1004 px blocks
    # and they are drawn: the last block (red, beyond the viewport) is red in the picture
    assert pixel(browser, full, 400, 2900) == [0xcc, 0x33, 0x33, 255]
    assert pixel(browser, full, 400, 100) == [255, 255, 255, 255]
    assert browser.js("return window.innerHeight") == 600  # the capture left the viewport alone


def test_screenshot_dir_default(monkeypatch):
    monkeypatch.delenv("SPEND_CAP_SCREENSHOTS", raising=False)
    assert screenshot_dir() == support.REPO / "build" / "screenshots"
    assert safe_name("test_x[a b/c]") == "test_x_a_b_c"


def test_horizontal_overflow_at_360(browser, site):
    browser.resize(360, 740)
    browser.open(site + "/")
    assert browser.js("return [window.innerWidth, window.innerHeight]") == [360, 740]
    browser.wait_for("#greeting", text="hello from json")
    assert browser.horizontal_overflow() == 0
    browser.click("#make-wide")
    browser.wait_for("#wide")
    assert browser.horizontal_overflow() >= 600 - 360
    browser.resize(1280, 900)  # wide enough: no overflow, and the emulated viewport is gone
    assert browser.js("return window.innerWidth") == 1280
    assert browser.horizontal_overflow() == 0


FAILING = """
def test_fails_in_the_browser(browser):
    browser.open("data:text/html,<p>about to fail</p>")
    assert False, "on purpose"
"""


def test_failed_test_leaves_a_screenshot(tmp_path):
    """The browser fixture photographs a failed test (a pytest run of its own)."""
    (tmp_path / "test_on_purpose.py").write_text(FAILING)
    shots = tmp_path / "shots"
    env = dict(os.environ, SPEND_CAP_SCREENSHOTS=str(shots),
               PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([support.PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                          "--basetemp", str(tmp_path / "inner"), "--rootdir", str(tmp_path),
                          str(tmp_path / "test_on_purpose.py")],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed" in run.stdout, run.stdout
    shot = shots / "test_on_purpose__test_fails_in_the_browser.png"
    assert shot.exists(), (sorted(p.name for p in shots.iterdir()) if shots.exists() else None, run.stdout)
    png_size(shot)
