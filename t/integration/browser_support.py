"""A real browser for the dashboard tests: Debian's chromium, headless, driven by
Selenium (python3-selenium) through Debian's chromedriver (chromium-driver).

Both binaries are named by path (/usr/bin/chromium, /usr/bin/chromedriver), so
Selenium Manager never runs and nothing is fetched from the network. Written
against Chromium 156.0.8078.114 and ChromeDriver 156.0.8078.114 (Debian 12,
156.0.8078.114-1~deb12u1) with Selenium 4.8.3.

    with Browser(tmp_path) as b:
        b.open(url)
        b.click("#save")
        b.wait_for(".toast", text="Saved")
        assert b.console_errors() == []
        assert b.foreign_requests(origin) == []

In tests use the `browser` fixture (conftest.py): a fresh Browser (own profile
under tmp_path), quit at teardown, with a screenshot named after the test when it
failed. Screenshots go to $SPEND_CAP_SCREENSHOTS, else <repo>/build/screenshots/.

Every wait polls for its event and returns as soon as it comes; its timeout only
bounds how long a busy box may take. Environment:
    SPEND_CAP_CHROMIUM      the browser (default /usr/bin/chromium)
    SPEND_CAP_CHROMEDRIVER  the driver (default /usr/bin/chromedriver)
    SPEND_CAP_SCREENSHOTS   where screenshots go
"""

import base64
import json
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SPEND_CAP_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SPEND_CAP_CHROMEDRIVER", "/usr/bin/chromedriver")
POLL = 0.05
_LOCAL_SCHEMES = ("data", "blob", "about")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def screenshot_dir():
    """$SPEND_CAP_SCREENSHOTS, else <repo>/build/screenshots (created)."""
    d = Path(os.environ.get("SPEND_CAP_SCREENSHOTS") or REPO / "build" / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def safe_name(name):
    """A file name from a test id: test_x[a-b] -> test_x_a-b_."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "screenshot"


def origin_of(url):
    """scheme://host:port (the port always written), or the scheme alone for data:, blob:, about:."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _LOCAL_SCHEMES or not parts.hostname:
        return scheme + ":"
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    return "%s://%s:%s" % (scheme, parts.hostname.lower(), port)


class Browser:
    def __init__(self, tmp_dir, width=1280, height=900):
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        profile = self.tmp_dir / "chromium-profile"
        profile.mkdir(exist_ok=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--disable-dev-shm-usage", "--user-data-dir=%s" % profile,
                    "--window-size=%d,%d" % (width, height), "--force-device-scale-factor=1",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-default-apps", "--lang=en-US"):
            opts.add_argument(arg)
        if os.geteuid() == 0:
            opts.add_argument("--no-sandbox")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = Service(executable_path=CHROMEDRIVER, log_path=str(self.tmp_dir / "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=opts)
        self._console = []       # every browser log entry read so far
        self._console_seen = 0   # console_errors() returned those before this index
        self._requests = []      # every URL of a Network.requestWillBeSent
        self._download_dir = None
        self._downloads_taken = set()
        self._emulated = False
        # leave the start page (chrome://new-tab-page...), and forget what it logged and loaded
        self.driver.get("about:blank")
        self.driver.get_log("browser")
        self.driver.get_log("performance")
        self.resize(width, height)

    # ------------------------------------------------------------ lifetime

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.quit()

    def quit(self):
        if self.driver is not None:
            try:
                self.driver.quit()
            finally:
                self.driver = None

    # ------------------------------------------------------------ navigation and the page

    def open(self, url):
        self.driver.get(url)

    def resize(self, width, height):
        """Makes the viewport (window.innerWidth x innerHeight) width x height, for this
        and the pages opened after it."""
        if self._emulated:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            self._emulated = False
        self.driver.set_window_size(width, height)
        iw, ih = self.js("return [window.innerWidth, window.innerHeight]")
        if (iw, ih) != (width, height):  # a window frame: grow the window by it
            self.driver.set_window_size(width + (width - iw), height + (height - ih))
            iw, ih = self.js("return [window.innerWidth, window.innerHeight]")
        if (iw, ih) != (width, height):  # below the minimum window width (500): emulate the viewport
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            self._emulated = True

    def js(self, script, *args):
        """Runs script (a function body: `return ...` gives the value) with arguments[...]."""
        return self.driver.execute_script(script, *args)

    def _wait(self, condition, timeout, message):
        return WebDriverWait(self.driver, timeout, poll_frequency=POLL,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)

    def wait_for(self, css, text=None, timeout=30, visible=True):
        """The first element matching css (displayed, unless visible=False) whose text
        contains text (when given)."""
        def found(driver):
            for el in driver.find_elements(By.CSS_SELECTOR, css):
                if visible and not el.is_displayed():
                    continue
                if text is not None and text not in (el.text if visible else el.get_attribute("textContent")):
                    continue
                return el
            return False
        return self._wait(found, timeout, "no %s%s%s after %s s" % (
            "visible " if visible else "", css, " with text %r" % text if text is not None else "", timeout))

    def wait_gone(self, css, timeout=30):
        """Until no element matching css is displayed (absent or hidden)."""
        def gone(driver):
            return not any(el.is_displayed() for el in driver.find_elements(By.CSS_SELECTOR, css))
        self._wait(gone, timeout, "%s still shown after %s s" % (css, timeout))

    def wait_text(self, css, predicate, timeout=30):
        """Until the text of the first element matching css satisfies predicate; returns the text."""
        last = []

        def ok(driver):
            els = driver.find_elements(By.CSS_SELECTOR, css)
            if not els:
                return False
            t = els[0].text
            last[:] = [t]
            return t if predicate(t) else False
        try:
            return self._wait(ok, timeout, "")
        except TimeoutException:
            raise TimeoutException("text of %s did not satisfy the predicate after %s s (last: %r)"
                                   % (css, timeout, last[0] if last else None)) from None

    def click(self, css, timeout=30):
        el = self.wait_for(css, timeout=timeout)
        self._wait(EC.element_to_be_clickable(el), timeout, "%s not clickable after %s s" % (css, timeout))
        el.click()
        return el

    def fill(self, css, value, timeout=30):
        """Clears the field, then types value."""
        el = self.wait_for(css, timeout=timeout)
        el.clear()
        if el.get_property("value"):  # clear() leaves what a script put back: select and delete
            el.send_keys(Keys.CONTROL, "a")
            el.send_keys(Keys.DELETE)
        el.send_keys(value)
        return el

    def text(self, css, timeout=30):
        return self.wait_for(css, timeout=timeout).text

    def horizontal_overflow(self):
        """Pixels the document is wider than the viewport (0: no horizontal scrolling)."""
        return self.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")

    # ------------------------------------------------------------ logs

    def _read_console(self):
        self._console.extend(self.driver.get_log("browser"))

    def console_entries(self):
        """Every browser log entry so far (dicts with level, message, source, timestamp)."""
        self._read_console()
        return list(self._console)

    def console_errors(self):
        """The browser log entries of level SEVERE since the last call (uncaught errors,
        console.error, failed loads)."""
        self._read_console()
        new = self._console[self._console_seen:]
        self._console_seen = len(self._console)
        return [e for e in new if e.get("level") == "SEVERE"]

    def _read_performance(self):
        for entry in self.driver.get_log("performance"):
            try:
                msg = json.loads(entry["message"])["message"]
            except (KeyError, ValueError):
                continue
            if msg.get("method") == "Network.requestWillBeSent":
                url = msg.get("params", {}).get("request", {}).get("url")
                if url:
                    self._requests.append(url)

    def requested_urls(self):
        """Every URL the pages requested so far (documents, scripts, fetches, images...), in order."""
        self._read_performance()
        return list(self._requests)

    def foreign_requests(self, origin):
        """The requested URLs whose origin is not origin (e.g. "http://127.0.0.1:8080"),
        data:, blob: and about: aside."""
        own = origin_of(origin)
        return [u for u in self.requested_urls()
                if origin_of(u) != own and urlsplit(u).scheme.lower() not in _LOCAL_SCHEMES]

    # ------------------------------------------------------------ storage

    def session_storage(self):
        return self.js("return Object.fromEntries(Object.keys(sessionStorage).map(k => [k, sessionStorage.getItem(k)]))")

    def local_storage(self):
        return self.js("return Object.fromEntries(Object.keys(localStorage).map(k => [k, localStorage.getItem(k)]))")

    def cookies(self):
        return self.driver.get_cookies()

    # ------------------------------------------------------------ downloads

    def downloads(self, directory):
        """Saves downloads into directory (created) without asking."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        params = {"behavior": "allow", "downloadPath": str(d.resolve())}
        try:
            self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", params)
        except WebDriverException:
            self.driver.execute_cdp_cmd("Page.setDownloadBehavior", params)
        self._download_dir = d
        self._downloads_taken = {p.name for p in d.iterdir()}
        return d

    def wait_download(self, suffix="", timeout=30):
        """The path of a completed download (not .crdownload) whose name ends with suffix,
        one not returned before."""
        if self._download_dir is None:
            raise RuntimeError("call downloads(directory) first")
        d = self._download_dir

        def done(_driver):
            for p in sorted(d.iterdir()):
                if (p.name.endswith(suffix) and not p.name.endswith(".crdownload")
                        and p.name not in self._downloads_taken and p.is_file()):
                    return p
            return False
        path = self._wait(done, timeout, "no download *%s in %s after %s s" % (suffix, d, timeout))
        self._downloads_taken.add(path.name)
        return path

    # ------------------------------------------------------------ screenshots

    def screenshot(self, name):
        """The viewport as <screenshot dir>/<name>.png; returns the path."""
        path = screenshot_dir() / (safe_name(name) + ".png")
        if not self.driver.save_screenshot(str(path)):
            raise RuntimeError("screenshot %s failed" % path)
        return path

    def full_page_screenshot(self, name):
        """The whole document (beyond the viewport) as <screenshot dir>/<name>.png; returns the path."""
        # the viewport's width (a scroll bar's place included: the tall capture has none)
        # by the document's height
        width, height = self.js("""const d = document.documentElement, b = document.body || d;
            return [Math.max(window.innerWidth, d.scrollWidth),
                    Math.max(window.innerHeight, d.scrollHeight, b.scrollHeight)]""")
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "fromSurface": True, "clip": clip})
        path = screenshot_dir() / (safe_name(name) + ".png")
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def png_size(path):
    """(width, height) of a PNG file; raises ValueError when it is not one."""
    data = Path(path).read_bytes()[:24]
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("%s is not a PNG" % path)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def wait_until(fn, timeout=30):
    """Polls fn() until truthy; returns the last value (falsy after timeout seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(POLL)
