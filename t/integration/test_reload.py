"""A reload (SIGHUP) re-reads the policy file; a bad file fails the reload and the
old configuration keeps serving."""

import re

from support import SECRETS, chat_body, default_policy, post, to_yaml, wait_until


def test_reload_rereads_policy(nginx, redis, fake):
    r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
    assert r.status_code == 200

    policy = default_policy()
    for k in policy["keys"]:
        if k["id"] == "k1":
            k["revoked"] = True
    nginx.policy_path.write_text(to_yaml(policy) + "\n")
    nginx.reload()

    def revoked():
        resp = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
        return resp if resp.status_code == 401 else None

    r = wait_until(revoked, timeout=10, interval=0.1)
    assert r is not None, "k1 still accepted 10 s after a reload that revoked it"
    assert r.json()["error"]["code"] == "api_key_revoked"
    # new workers only: every request from now on sees the new policy
    for _ in range(6):
        assert post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"]).status_code == 401


def test_bad_policy_reload_keeps_the_old_configuration(nginx, redis, fake):
    good_text = nginx.policy_path.read_text()
    nginx.policy_path.write_text(good_text.replace("input: 0.15", "input: zero"))
    nginx.reload()
    assert wait_until(lambda: "[emerg]" in nginx.error_text(), timeout=10), "the bad reload was not reported"
    emerg = [line for line in nginx.error_text().splitlines() if "[emerg]" in line]
    assert any(re.search(re.escape(str(nginx.policy_path)) + r":\d+", line) for line in emerg), emerg
    # still serving with the old policy
    for _ in range(4):
        r = post(nginx.url, "/v1/chat/completions", chat_body(), SECRETS["k1"])
        assert r.status_code == 200, r.text
    # the expected [emerg] is fine at teardown; anything else alarming is not
    nginx.expected_log_lines.append(str(nginx.policy_path))
