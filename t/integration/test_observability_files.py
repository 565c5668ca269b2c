"""Checks the observability files shipped in docs/: the Grafana dashboard
(docs/grafana-dashboard.json) and the example Prometheus alert rules
(docs/prometheus-alerts.yml).

- promtool accepts the rules file;
- every PromQL expression of the dashboard parses (promtool, as recording rules);
- every metric either file queries is one the module exposes;
- promtool's rule unit tests: the alerts fire on broken series and stay quiet on
  healthy ones;
- the dashboard is well-formed and charts the essential metrics.

Needs no NGINX, only promtool (Debian package prometheus): missing, the promtool
tests are skipped, or fail when the environment variable CI is set.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
ALERTS = ROOT / "docs" / "prometheus-alerts.yml"

# What src/core/http/metrics.cpp renders at spend_cap_status.
PLAIN_METRICS = {
    "spend_cap_requests_total",
    "spend_cap_blocked_total",
    "spend_cap_cost_nanousd_total",
    "spend_cap_reserved_nanousd_total",
    "spend_cap_tokens_total",
    "spend_cap_settlements_total",
    "spend_cap_settlements_lost_total",
    "spend_cap_settlement_backlog",
    "spend_cap_redis_up",
    "spend_cap_redis_errors_total",
    "spend_cap_org_cost_nanousd_total",
    "spend_cap_org_requests_total",
    "spend_cap_info",
}
HISTOGRAMS = {"spend_cap_redis_seconds"}
# A histogram's samples are its _bucket, _sum and _count series: its bare name selects nothing.
KNOWN_METRICS = PLAIN_METRICS | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

METRIC_TOKEN = re.compile(r"spend_cap_[a-z_]+")

# Grafana's template variables, replaced by concrete values to hand the queries to promtool.
SUBSTITUTIONS = [
    (re.compile(r"\$\{instance(?::[a-z]+)?\}|\$instance\b"), "gw-a:8080"),
    (re.compile(r"\$\{__rate_interval\}|\$__rate_interval\b"), "5m"),
    (re.compile(r"\$\{__interval\}|\$__interval\b"), "1m"),
    (re.compile(r"\$\{__range\}|\$__range\b"), "6h"),
]


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_promtool(promtool, *args):
    proc = subprocess.run([promtool, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)
    assert proc.returncode == 0, "promtool %s exited %d:\n%s" % (" ".join(args), proc.returncode, proc.stdout)
    return proc.stdout


@pytest.fixture(scope="module")
def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def alert_rules():
    with open(ALERTS) as f:
        doc = yaml.safe_load(f)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def all_panels(dashboard):
    """Every panel, the ones inside (collapsed) rows included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries(dashboard):
    """(where, expr) of every panel target and every query variable."""
    out = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append(("panel %d %r target %s" % (panel["id"], panel.get("title"), target.get("refId")),
                            target["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append(("variable %s" % var["name"], query))
    return out


def concrete(expr):
    for pattern, value in SUBSTITUTIONS:
        expr = pattern.sub(value, expr)
    return expr


def test_alert_rules_pass_promtool_check(promtool):
    out = run_promtool(promtool, "check", "rules", str(ALERTS))
    assert "SUCCESS" in out, out


def test_alert_rules_are_the_documented_ones(alert_rules):
    by_name = {rule["alert"]: rule for rule in alert_rules if "alert" in rule}
    expected = {
        "SpendCapRedisDown": "critical",
        "SpendCapSettlementBacklogGrowing": "warning",
        "SpendCapSettlementsLost": "critical",
        "SpendCapBlockRateSpike": "warning",
        "SpendCapRedisSlow": "warning",
        "SpendCapGatewayErrors": "warning",
    }
    for name, severity in expected.items():
        assert name in by_name, "alert %s missing from %s" % (name, ALERTS)
        rule = by_name[name]
        assert rule["labels"]["severity"] == severity, name
        for annotation in ("summary", "description"):
            assert rule.get("annotations", {}).get(annotation, "").strip(), "%s lacks %s" % (name, annotation)
    assert by_name["SpendCapRedisDown"]["for"] == "1m"
    assert by_name["SpendCapSettlementBacklogGrowing"]["for"] == "10m"
    assert by_name["SpendCapRedisSlow"]["for"] == "10m"
    assert "histogram_quantile(0.99" in by_name["SpendCapRedisSlow"]["expr"]
    assert 'decision="error"' in by_name["SpendCapGatewayErrors"]["expr"]


def test_dashboard_queries_are_valid_promql(promtool, dashboard, tmp_path):
    queries = dashboard_queries(dashboard)
    assert queries
    rules = []
    for i, (where, expr) in enumerate(queries):
        if expr.startswith("label_values("):  # Grafana's variable function, not PromQL
            match = re.fullmatch(r"label_values\(\s*(.+?)\s*,\s*([a-zA-Z_]\w*)\s*\)", expr.strip())
            assert match, "%s: unexpected variable query %r" % (where, expr)
            expr = match.group(1)
        promql = concrete(expr)
        assert "$" not in promql, "%s: template variable left after substitution: %r" % (where, promql)
        rules.append({"record": "dashboard:query_%d" % i, "expr": promql})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    out = run_promtool(promtool, "check", "rules", str(path))
    assert "SUCCESS: %d rules found" % len(rules) in out, out


def test_files_only_query_metrics_the_module_exposes(dashboard, alert_rules):
    used = {}
    for where, expr in dashboard_queries(dashboard):
        for name in METRIC_TOKEN.findall(expr):
            used.setdefault(name, []).append(where)
    for rule in alert_rules:
        for name in METRIC_TOKEN.findall(rule["expr"]):
            used.setdefault(name, []).append("rule %s" % rule.get("alert", rule.get("record")))
    unknown = {name: where for name, where in used.items() if name not in KNOWN_METRICS}
    assert not unknown, "metrics the module does not expose: %s" % unknown
    # Every family the module exposes is charted by the dashboard.
    charted = {name for where, expr in dashboard_queries(dashboard) for name in METRIC_TOKEN.findall(expr)}
    families = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in HISTOGRAMS
                else n for n in charted}
    assert PLAIN_METRICS | HISTOGRAMS <= families, "not charted: %s" % sorted(PLAIN_METRICS | HISTOGRAMS - families)


def test_dashboard_structure(dashboard):
    assert 30 <= dashboard["schemaVersion"] <= 45
    assert dashboard.get("uid") and dashboard.get("title")
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids: %s" % sorted(ids)
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), panel["id"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["id"]
        for y in range(grid["y"], grid["y"] + grid["h"]):
            for x in range(grid["x"], grid["x"] + grid["w"]):
                assert (x, y) not in cells, "panel %d overlaps another" % panel["id"]
                cells.add((x, y))

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    instance = variables["instance"]
    query = instance["query"]["query"] if isinstance(instance["query"], dict) else instance["query"]
    assert re.fullmatch(r"label_values\(\s*spend_cap_info\s*,\s*instance\s*\)", query), query
    assert instance["multi"] and instance["includeAll"]
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["id"]
            for target in panel["targets"]:
                assert re.search(r'instance=~"\$instance"', target["expr"]), \
                    "panel %d ignores the instance variable: %s" % (panel["id"], target["expr"])

    def panels_using(metric):
        return [p for p in panels if any(re.search(r"\b%s\b" % metric, t.get("expr", "")) for t in p.get("targets", []))]

    for metric in ("spend_cap_requests_total", "spend_cap_blocked_total", "spend_cap_cost_nanousd_total",
                   "spend_cap_redis_seconds_bucket", "spend_cap_settlement_backlog", "spend_cap_redis_up",
                   "spend_cap_info"):
        assert panels_using(metric), "no panel charts %s" % metric

    latency = [t["expr"] for p in panels_using("spend_cap_redis_seconds_bucket") for t in p["targets"]]
    for q in ("0.5", "0.99"):
        assert any(re.search(r"histogram_quantile\(\s*%s\s*," % re.escape(q), e) and "by (le)" in e
                   for e in latency), "no p%s of the Redis round trip: %s" % (q, latency)
    assert all(p["fieldConfig"]["defaults"]["unit"] == "s" for p in panels_using("spend_cap_redis_seconds_bucket"))

    cost = panels_using("spend_cap_cost_nanousd_total")
    per_minute = [p for p in cost if any(re.search(r"\*\s*60\s*/\s*1e9", t["expr"]) for t in p["targets"])]
    assert per_minute and per_minute[0]["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
    assert panels_using("spend_cap_redis_up")[0]["type"] == "stat"


def without_annotations(rules_doc):
    """The rules with their annotations dropped: promtool's unit tests compare
    annotations verbatim, which would pin the prose here; templates are checked by
    `promtool check rules` above."""
    for group in rules_doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return rules_doc


HEALTHY = {"instance": "gw-b:8080", "job": "spend-cap"}
BROKEN = {"instance": "gw-a:8080", "job": "spend-cap"}


def series(name, labels, values):
    return {"series": "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in sorted(labels.items()))),
            "values": values}


def test_alerts_fire_in_promtool_unit_tests(promtool, tmp_path):
    with open(ALERTS) as f:
        rules = without_annotations(yaml.safe_load(f))
    rules_path = tmp_path / "spend-cap-alerts.yml"
    rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))

    def alert(labels, **extra):
        return {"exp_labels": dict(labels, **extra)}

    # 1 minute apart: gw-a loses Redis at 2m (SpendCapRedisDown: for 1m) and loses
    # settlements at 5m; gw-b stays healthy throughout.
    broken = {
        "interval": "1m",
        "input_series": [
            series("spend_cap_redis_up", BROKEN, "1 1 0x20"),
            series("spend_cap_redis_up", HEALTHY, "1x22"),
            series("spend_cap_info", dict(BROKEN, version="1", nginx="1.24.0"), "1x22"),
            series("spend_cap_info", dict(HEALTHY, version="1", nginx="1.24.0"), "1x22"),
            series("spend_cap_settlements_lost_total", dict(BROKEN, reason="backlog_full"), "0x4 4x17"),
            series("spend_cap_settlements_lost_total", dict(BROKEN, reason="refused"), "0x22"),
            series("spend_cap_settlements_lost_total", dict(HEALTHY, reason="backlog_full"), "0x22"),
            series("spend_cap_settlements_lost_total", dict(HEALTHY, reason="refused"), "0x22"),
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "SpendCapRedisDown", "exp_alerts": []},
            # Down since 2m: pending at 2m, firing once down for longer than its `for`.
            {"eval_time": "2m", "alertname": "SpendCapRedisDown", "exp_alerts": []},
            {"eval_time": "4m", "alertname": "SpendCapRedisDown",
             "exp_alerts": [alert(BROKEN, severity="critical")]},
            {"eval_time": "15m", "alertname": "SpendCapRedisDown",
             "exp_alerts": [alert(BROKEN, severity="critical")]},
            {"eval_time": "4m", "alertname": "SpendCapSettlementsLost", "exp_alerts": []},
            {"eval_time": "6m", "alertname": "SpendCapSettlementsLost",
             "exp_alerts": [alert(BROKEN, severity="critical", reason="backlog_full")]},
            # Quiet again once the increase has left its 5m window.
            {"eval_time": "15m", "alertname": "SpendCapSettlementsLost", "exp_alerts": []},
        ],
    }

    # Two hours of steady traffic on both gateways, Redis up, counters rising,
    # no losses, a steady block rate.
    steady = dict(instance="gw-c:8080", job="spend-cap")
    healthy = {
        "interval": "1m",
        "input_series": [
            series("spend_cap_redis_up", steady, "1x120"),
            series("spend_cap_info", dict(steady, version="1", nginx="1.24.0"), "1x120"),
            series("spend_cap_settlement_backlog", steady, "0x120"),
            series("spend_cap_settlements_lost_total", dict(steady, reason="backlog_full"), "0x120"),
            series("spend_cap_settlements_lost_total", dict(steady, reason="refused"), "0x120"),
            series("spend_cap_requests_total", dict(steady, decision="allow"), "0+600x120"),
            series("spend_cap_requests_total", dict(steady, decision="block"), "0+12x120"),
            series("spend_cap_blocked_total", dict(steady, scope="key", limit="rpm"), "0+12x120"),
            series("spend_cap_requests_total", dict(steady, decision="error"), "0x120"),
        ],
        "alert_rule_test": [
            {"eval_time": t, "alertname": name, "exp_alerts": []}
            for t in ("1m", "10m", "70m", "119m")
            for name in ("SpendCapRedisDown", "SpendCapSettlementsLost", "SpendCapBlockRateSpike",
                         "SpendCapSettlementBacklogGrowing", "SpendCapGatewayErrors", "SpendCapRedisSlow")
        ],
    }

    # Blocks that jump from none at all (their series did not exist an hour ago)
    # to 0.5/s: SpendCapBlockRateSpike fires after its 5m `for`.
    spike_gw = dict(instance="gw-d:8080", job="spend-cap")
    spike = {
        "interval": "1m",
        "input_series": [
            series("spend_cap_info", dict(spike_gw, version="1", nginx="1.24.0"), "1x100"),
            series("spend_cap_blocked_total", dict(spike_gw, scope="org", limit="daily_usd"),
                   "_x70 0+30x30"),
        ],
        "alert_rule_test": [
            {"eval_time": "70m", "alertname": "SpendCapBlockRateSpike", "exp_alerts": []},
            {"eval_time": "74m", "alertname": "SpendCapBlockRateSpike", "exp_alerts": []},
            {"eval_time": "82m", "alertname": "SpendCapBlockRateSpike",
             "exp_alerts": [alert(spike_gw, severity="warning")]},
        ],
    }

    tests_path = tmp_path / "spend-cap-alerts.test.yml"
    tests_path.write_text(yaml.safe_dump({
        "rule_files": [str(rules_path)],
        "evaluation_interval": "1m",
        "tests": [broken, healthy, spike],
    }, sort_keys=False))
    out = run_promtool(promtool, "test", "rules", str(tests_path))
    assert "SUCCESS" in out, out
