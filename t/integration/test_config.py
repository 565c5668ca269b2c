"""`nginx -t` validates the policy file and names FILE:LINE and the reason."""

import re

import pytest

from support import SECRETS, sha256_hex

SHA = sha256_hex(SECRETS["k1"])
SHA2 = sha256_hex(SECRETS["k_open"])

GOOD = """\
models:
  gpt-4o-mini:
    input: 0.15
    output: 0.60
unknown_model: reject
orgs:
  acme:
    limits: { daily_usd: 5 }
projects:
  acme-prod:
    org: acme
keys:
  - id: k1
    sha256: %s
    project: acme-prod
    limits: { monthly_usd: 10 }
""" % SHA


def mutate(line_no, new_line, insert=False):
    lines = GOOD.splitlines()
    if insert:
        lines.insert(line_no - 1, new_line)
    else:
        lines[line_no - 1] = new_line
    return "\n".join(lines) + "\n"


def run_t(nginx_factory, policy_text):
    ng = nginx_factory(start=False, policy=policy_text)
    res = ng.test_config()
    ng.log_checked = True  # [emerg] is expected in this error.log
    return ng, res


def test_good_policy_passes(nginx_factory):
    ng, res = run_t(nginx_factory, GOOD)
    assert res.returncode == 0, res.stderr
    assert "test is successful" in res.stderr


@pytest.mark.parametrize("policy,lines", [
    (mutate(3, "    input: abc"), {3}),
    (mutate(3, "    input: -0.15"), {3}),
    (mutate(3, "    input: 1e-3"), {3}),
    (mutate(3, "    input: 0.0000000001"), {3}),            # finer than a nano-USD
    (mutate(4, "    outptu: 0.60"), {4}),                   # unknown field
    (mutate(5, "unknown_model: gpt-5-nonexistent"), {5}),   # not a listed model
    (mutate(8, "    limits: { daily_usd: ten }"), {8}),
    (mutate(8, "    limits: { hourly_usd: 5 }"), {8}),
    (mutate(11, "    org: nope"), {10, 11}),
    (mutate(14, "    sha256: not-a-sha"), {14}),
    (mutate(15, "    project: nope"), {13, 15}),
    (mutate(16, "    colour: blue", insert=True), {16}),
    (mutate(17, "  - { id: k1, sha256: %s, project: acme-prod }" % SHA2, insert=True), {17}),  # duplicate id
    (mutate(17, "  - { id: k2, sha256: %s, project: acme-prod }" % SHA, insert=True), {17}),   # duplicate hash
])
def test_bad_policy_names_file_line_and_reason(nginx_factory, policy, lines):
    ng, res = run_t(nginx_factory, policy)
    assert res.returncode != 0, "nginx -t accepted a bad policy:\n%s\n%s" % (policy, res.stderr)
    m = re.search(re.escape(str(ng.policy_path)) + r":(\d+):? *(\S[^\n]*)", res.stderr)
    assert m, "stderr does not name %s:LINE: %s" % (ng.policy_path, res.stderr)
    assert int(m.group(1)) in lines, "expected line %s, stderr: %s" % (sorted(lines), res.stderr)
    assert len(m.group(2).strip()) > 3, "no reason given: %s" % res.stderr


def test_yaml_syntax_error(nginx_factory):
    ng, res = run_t(nginx_factory, mutate(8, "    limits: { daily_usd: 5 "))
    assert res.returncode != 0
    m = re.search(re.escape(str(ng.policy_path)) + r":(\d+)", res.stderr)
    assert m and int(m.group(1)) >= 8, res.stderr


def test_missing_policy_file(nginx_factory):
    ng = nginx_factory(start=False)
    ng.policy_path.unlink()
    res = ng.test_config()
    ng.log_checked = True
    assert res.returncode != 0
    assert str(ng.policy_path) in res.stderr, res.stderr


@pytest.mark.parametrize("directives,reason", [
    ("spend_cap_redis_cluster 127.0.0.1:7000 127.0.0.1:7001;", None),
    ("spend_cap_redis_cluster 127.0.0.1:7000 password=secret;\nspend_cap_redis_replicas 1;", None),
    ("spend_cap_redis_cluster 127.0.0.1:7000;\nspend_cap_redis 127.0.0.1:6379;", "already set"),
    ("spend_cap_redis_cluster 127.0.0.1:7000 db=2;", "invalid parameter"),
    ("spend_cap_redis_cluster unix:/tmp/redis.sock;", "a cluster node is host:port"),
    ("spend_cap_redis_cluster password=secret;", "no address"),
    ("spend_cap_redis 127.0.0.1:6379;\nspend_cap_redis_replicas 17;", "between 0 and 16"),
    ("spend_cap_redis 127.0.0.1:6379 127.0.0.1:6380;", "invalid parameter"),
])
def test_redis_directives(nginx_factory, directives, reason):
    """spend_cap_redis_cluster / spend_cap_redis_replicas at load: the seeds need not
    answer (nginx -t connects to nothing), a bad combination names its reason."""
    assert_config(nginx_factory(start=False, redis_directive=directives), reason)


def assert_config(ng, reason):
    """nginx -t passes (reason None), or fails naming `reason`."""
    res = ng.test_config()
    ng.log_checked = True
    if reason is None:
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode != 0 and reason in res.stderr, res.stderr


@pytest.mark.parametrize("http_extra,server_extra,reason", [
    ("spend_cap_status_orgs 0;", "location = /metrics { spend_cap_status; }", None),
    ("spend_cap_status_orgs 10000;", "location = /metrics { spend_cap_status; }", None),
    ("spend_cap_status_orgs 10001;", "", "between 0 and 10000"),
    ("spend_cap_status_orgs many;", "", "invalid number"),
    ("", "location = /metrics { spend_cap_status on; }", "invalid number of arguments"),
    ("", "spend_cap_status;", "is not allowed here"),
])
def test_status_directives(nginx_factory, http_extra, server_extra, reason):
    """spend_cap_status (a location's) and spend_cap_status_orgs (http, bounded)."""
    assert_config(nginx_factory(start=False, http_extra=http_extra, server_extra=server_extra), reason)
