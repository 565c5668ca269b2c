"""The dashboard (SPEC section 11) in a real browser: Debian's chromium, headless,
through Selenium (browser_support.py), against a real NGINX serving the page
(spend_cap_dashboard) and the management API, a real Redis and the fake provider.

The page is read as a person reads it and compared with what the API answers;
every action is checked by its effect through the API and the gateway. The
screenshots of the main views land in build/screenshots/ (two are in the README)."""

import csv
import io

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from admin_support import PREFIX, TOKEN, chat
from support import SECRETS, default_policy, wait_until

UI = PREFIX + "/ui/"
DASHBOARD = "location %s { spend_cap_dashboard %s/; }" % (UI, PREFIX)


def prepaid_policy():
    pol = default_policy()
    pol["orgs"]["acme"]["prepaid"] = False
    pol["orgs"]["beta"]["prepaid"] = True
    pol["orgs"]["beta"]["low_balance_usd"] = "5"
    return pol


@pytest.fixture
def site(admin_factory):
    api = admin_factory(policy=prepaid_policy(), server_extra=DASHBOARD)
    return api


def page_url(api, route=""):
    return api.nginx.url + UI + route


def sign_in(browser, api, kind, credential, route=""):
    browser.open(page_url(api, route))
    browser.click("#kind-" + kind)
    browser.fill("#credential", credential)
    browser.click("#sign-in-submit")
    browser.wait_for("#sign-out")


def spend(api, secret, requests=1):
    """`requests` chats through the gateway, each answered 200 and settled."""
    usage_path = "/keys/self/usage"
    before = api.get(usage_path, token=secret).json()["windows"][0]["requests"] or 0
    for _ in range(requests):
        assert chat(api.nginx, secret).status_code == 200
    assert wait_until(lambda: api.get(usage_path, token=secret).json()["windows"][0]["requests"] == before + requests,
                      timeout=30)


def only_refusals(browser, status):
    """Every console error since the last look is the browser's own line for an API
    answer of `status` the test asked for (a page's script errors would be others)."""
    errors = browser.console_errors()
    assert errors and all(e["source"] == "network" and "status of %d" % status in e["message"] for e in errors), errors


def nanos(browser, css):
    return int(browser.wait_for(css).get_attribute("data-nanousd"))


def shown_caps(browser, panel):
    """(window, spent, cap or None) of the scope's own caps shown in a usage panel."""
    rows = []
    for cap in browser.driver.find_elements(By.CSS_SELECTOR, panel + " .caps .cap"):
        spent = int(cap.find_element(By.CSS_SELECTOR, ".spent").get_attribute("data-nanousd"))
        amounts = cap.find_elements(By.CSS_SELECTOR, ".cap-amount")
        rows.append((cap.get_attribute("data-window"), spent,
                     int(amounts[0].get_attribute("data-nanousd")) if amounts else None))
    return rows


def api_caps(usage):
    return [(w["window"], w["spent_nanousd"], w["cap_nanousd"]) for w in usage["windows"]]


def test_page_signs_in_with_the_admin_token_and_shows_the_api_figures(site, browser):
    api = site
    spend(api, SECRETS["k1"], 2)
    origin = api.nginx.url

    # the sign-in page, all of it from this origin, without a console error
    browser.open(page_url(api))
    browser.wait_for("#sign-in")
    assert browser.wait_for("label[for='credential']").text
    # a wrong token is refused with the API's message, and nothing is kept
    browser.fill("#credential", "not-the-token")
    browser.click("#sign-in-submit")
    assert "Not accepted" in browser.wait_text("#sign-in-error", bool)
    assert browser.session_storage() == {}
    only_refusals(browser, 401)

    browser.fill("#credential", TOKEN)
    browser.click("#sign-in-submit")
    browser.wait_for("a[data-org='acme']")
    # the token: in this tab's sessionStorage only, never in the URL, a cookie or localStorage
    stored = browser.session_storage()
    assert any(TOKEN in v for v in stored.values()), stored
    assert TOKEN not in browser.driver.current_url
    assert browser.cookies() == [] and browser.local_storage() == {}
    assert all(TOKEN not in u for u in browser.requested_urls())
    assert {a.get_attribute("data-org") for a in browser.driver.find_elements(By.CSS_SELECTOR, "a[data-org]")} \
        == {o["id"] for o in api.get("/orgs").json()["orgs"]}

    # org → its figures as the API gives them, a chart drawn, its projects and events
    browser.click("a[data-org='acme']")
    browser.wait_for("#usage .caps .cap")
    assert shown_caps(browser, "#usage") == api_caps(api.get("/orgs/acme/usage").json())
    browser.wait_for("#daily-chart canvas")
    browser.wait_for("#daily .chart-total .amount")
    total = sum(d["spent_nanousd"] for d in api.get("/orgs/acme/usage/daily").json()["days"])
    assert nanos(browser, "#daily .chart-total .amount") == total > 0
    browser.wait_for("a[data-project='acme-prod']")
    browser.full_page_screenshot("dashboard-org")

    # project → its keys → a key: its budgets in check order, the binding one marked
    browser.click("a[data-project='acme-prod']")
    browser.wait_for("a[data-key='k1']")
    assert shown_caps(browser, "#usage") == api_caps(api.get("/projects/acme-prod/usage").json())
    browser.click("a[data-key='k1']")
    browser.wait_for("#budgets .cap")
    budgets = api.get("/keys/k1/budgets").json()["budgets"]
    shown = [(c.get_attribute("data-scope"), c.get_attribute("data-window"), c.get_attribute("data-binding"),
              int(c.find_element(By.CSS_SELECTOR, ".spent").get_attribute("data-nanousd")),
              int(c.find_element(By.CSS_SELECTOR, ".cap-amount").get_attribute("data-nanousd")))
             for c in browser.driver.find_elements(By.CSS_SELECTOR, "#budgets .cap")]
    assert shown == [(b["scope"], b["window"], "true" if b["binding"] else "false", b["spent_nanousd"],
                      b["cap_nanousd"]) for b in budgets]
    assert sum(1 for s in shown if s[2] == "true") == 1
    browser.wait_for("#usage .caps .cap")
    assert shown_caps(browser, "#usage") == api_caps(api.get("/keys/k1/usage").json())
    browser.wait_for("#daily-chart canvas")
    browser.full_page_screenshot("dashboard-key")

    assert browser.foreign_requests(origin) == []
    assert browser.console_errors() == []

    # at 360 px: nothing wider than the screen
    browser.resize(360, 800)
    browser.open(page_url(api, "#/orgs/acme"))
    browser.wait_for("#daily-chart canvas")
    browser.wait_for("#usage .caps .cap")
    assert browser.horizontal_overflow() == 0
    browser.full_page_screenshot("dashboard-org-360")
    assert browser.console_errors() == []


def test_operator_creates_a_key_uses_it_sets_limits_and_revokes_it(site, browser):
    api = site
    sign_in(browser, api, "admin", TOKEN, "#/projects/acme-prod")
    browser.wait_for("#create-key")
    browser.fill("#new-key-id", "dash-key")
    browser.fill("#new-key-name", "made in the dashboard")
    browser.click("#create-key button[type='submit']")
    secret = browser.wait_for("#new-secret").text
    assert secret.startswith("sk-sc-") and len(secret) >= 38
    assert browser.wait_for("#copy-secret").text == "Copy"
    browser.wait_for("a[data-key='dash-key']")  # the key list was refreshed
    key = api.get("/keys/dash-key").json()
    assert key["name"] == "made in the dashboard" and key["project"] == "acme-prod" and key["source"] == "api"

    # the secret works through the gateway
    assert chat(api.nginx, secret).status_code == 200
    # and is shown once: the key's page never shows it
    browser.click("a[data-key='dash-key']")
    browser.wait_for("#budgets")
    assert secret not in browser.driver.page_source

    # limits with the budget shapes (weekly, per model, allowed models), then an API error shown as it came
    browser.wait_for("#limits-form")
    browser.fill("#limit-weekly_usd", "7.5")
    browser.fill("#limit-rpm", "30")
    browser.fill("#limit-models", '{"gpt-4o*": {"daily_usd": "1"}}')
    browser.fill("#limit-allowed_models", "gpt-4o*, claude*")
    browser.click("#save-limits")
    browser.wait_text("#limits-result", lambda t: "saved" in t)
    assert api.get("/keys/dash-key").json()["limits"] == {
        "weekly_usd": "7.50", "rpm": 30, "models": {"gpt-4o*": {"daily_usd": "1.00"}},
        "allowed_models": ["gpt-4o*", "claude*"]}
    browser.fill("#limit-weekly_usd", "seven")
    browser.click("#save-limits")
    message = api.put("/keys/dash-key/limits", {"weekly_usd": "seven"}).json()["error"]["message"]
    assert message in browser.wait_text("#limits-result", lambda t: "invalid_request" in t)
    assert api.get("/keys/dash-key").json()["limits"]["weekly_usd"] == "7.50"  # nothing changed
    only_refusals(browser, 400)
    browser.click("#clear-limits")
    browser.wait_text("#limits-result", lambda t: "cleared" in t)
    assert api.get("/keys/dash-key").json()["limits"] == {}

    # rotate with grace: a new secret shown once, the old one still works for now
    browser.fill("#grace-seconds", "3600")
    browser.click("#rotate-key button[type='submit']")
    rotated = browser.wait_text("#rotate-result #new-secret", lambda t: t.startswith("sk-sc-"))
    assert rotated != secret
    assert chat(api.nginx, rotated).status_code == 200
    assert chat(api.nginx, secret).status_code == 200

    # revoke (two clicks: the first arms the button), then the next request is 401
    browser.click("#revoke-key")
    browser.wait_text("#revoke-key", lambda t: "again" in t)
    assert api.get("/keys/dash-key").json()["revoked"] is False
    browser.click("#revoke-key")
    browser.wait_text("#revoke-result", lambda t: "Revoked" in t)
    assert api.get("/keys/dash-key").json()["revoked"] is True
    refused = chat(api.nginx, rotated)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_revoked"
    browser.wait_for("#facts .badge.revoked")
    kinds = [e["type"] for e in api.get("/orgs/acme/events").json()["events"]]
    assert kinds.count("key_created") == 1 and kinds.count("key_rotated") == 1 and kinds.count("key_revoked") == 1
    browser.wait_for("#events li.event[data-type='key_revoked']")
    assert browser.console_errors() == []


def test_a_double_clicked_top_up_credits_once(site, browser):
    api = site
    sign_in(browser, api, "admin", TOKEN, "#/orgs/beta")
    browser.wait_for("#balance")
    assert nanos(browser, "#balance [data-field='available'] .amount") == 0
    browser.fill("#topup-amount", "12.345678901")
    ActionChains(browser.driver).double_click(browser.wait_for("#topup-submit")).perform()
    browser.wait_text("#topup-result", lambda t: "Credited" in t)
    balance = api.get("/orgs/beta/balance").json()
    assert balance["balance_nanousd"] == 12345678901
    topups = [e for e in api.get("/orgs/beta/events").json()["events"] if e["type"] == "topup"]
    assert len(topups) == 1
    # the figures were read again after the top-up
    browser.wait_text("#balance [data-field='available'] .amount", lambda t: t == "$12.345678901")

    # a second top-up the person means (an amount typed again) is credited
    browser.fill("#topup-amount", "1")
    browser.click("#topup-submit")
    browser.wait_text("#topup-result", lambda t: "$1" in t and "Credited" in t)
    assert api.get("/orgs/beta/balance").json()["balance_nanousd"] == 13345678901

    # an amount the API refuses: its message, nothing credited
    browser.fill("#topup-amount", "-5")
    browser.click("#topup-submit")
    browser.wait_text("#topup-result", lambda t: "invalid_request" in t)
    assert api.get("/orgs/beta/balance").json()["balance_nanousd"] == 13345678901
    only_refusals(browser, 400)

    # cleared spend
    browser.fill("#cleared-amount", "250.5")
    browser.click("#cleared-form button[type='submit']")
    browser.wait_text("#cleared-result", lambda t: "set" in t)
    assert api.get("/orgs/beta").json()["cleared_nanousd"] == 250500000000
    browser.full_page_screenshot("dashboard-org-prepaid")
    assert browser.console_errors() == []


def test_a_key_holder_sees_only_their_key_and_exports_csv(site, browser, tmp_path):
    api = site
    spend(api, SECRETS["k1"], 1)
    origin = api.nginx.url
    downloads = browser.downloads(tmp_path / "downloads")
    sign_in(browser, api, "key", SECRETS["k1"])
    assert browser.wait_for("#whoami").text == "Key holder"
    browser.wait_for("#budgets .cap")
    assert browser.text("#facts [data-field='id'] dd") == "k1"
    budgets = api.get("/keys/self/budgets", token=SECRETS["k1"]).json()["budgets"]
    assert len(browser.driver.find_elements(By.CSS_SELECTOR, "#budgets .cap")) == len(budgets)
    assert shown_caps(browser, "#usage") == api_caps(api.get("/keys/self/usage", token=SECRETS["k1"]).json())
    browser.wait_for("#daily-chart canvas")
    # only this key: no orgs, no actions, and only /keys/self* asked for
    assert browser.driver.find_elements(By.CSS_SELECTOR, "a[data-org], form#limits-form, #revoke-key") == []
    api_paths = [u[len(origin + PREFIX):] for u in browser.requested_urls()
                 if u.startswith(origin + PREFIX + "/") and not u.startswith(origin + UI)]
    assert api_paths and all(p.startswith("/keys/self") for p in api_paths), api_paths
    # another route in the URL still shows only the key's own page
    browser.open(page_url(api, "#/orgs/acme"))
    browser.wait_for("#budgets .cap")
    assert browser.driver.find_elements(By.CSS_SELECTOR, "a[data-org]") == []
    browser.full_page_screenshot("dashboard-key-holder")

    # CSV export: the file is the API's CSV of the same days
    browser.click("#export-csv")
    path = browser.wait_download(".csv")
    exported = path.read_text()
    expected = api.get("/keys/self/usage/daily?days=30&format=csv", token=SECRETS["k1"]).text
    assert exported == expected
    rows = list(csv.reader(io.StringIO(exported)))
    assert len(rows) == 31 and rows[-1][rows[0].index("requests")] == "1"
    assert downloads.exists()

    # 360 px wide: nothing overflows
    browser.resize(360, 800)
    browser.open(page_url(api))
    browser.wait_for("#daily-chart canvas")
    browser.wait_for("#budgets .cap")
    assert browser.horizontal_overflow() == 0
    browser.full_page_screenshot("dashboard-key-holder-360")

    # sign out: the credential leaves the tab
    browser.click("#sign-out")
    browser.wait_for("#sign-in")
    assert browser.session_storage() == {}
    assert browser.foreign_requests(origin) == []
    assert browser.console_errors() == []
