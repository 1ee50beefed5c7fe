"""deploy/prometheus and deploy/grafana: promtool accepts and unit-tests the rules, every
series the rules and the dashboard query is one a live server exports (with the labels they
group and filter by), and every histogram it exports is charted or said not to be."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from redline.serve.app import create_app
from redline.serve.testing import HashingModel
from tests._services import require_binary
from tests.serve._helpers import ThreadedServer, make_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "redline-dashboard.json"
_SERIES = re.compile(r"\b(redline_[a-z_]+)")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
#: Labels Prometheus adds when it scrapes (``le`` is checked apart: buckets only).
_TARGET_LABELS = frozenset({"job", "instance"})
#: Exported histograms no dashboard panel charts, and why.
NOT_CHARTED = {
    "redline_event_loop_lag_seconds": "a diagnosis aid: read on /status, not a fleet signal",
    "redline_upstream_request_duration_seconds": "gateway only: not in this overview yet",
    "redline_upstream_batch_size": "gateway only: not in this overview yet",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The /metrics text of a real server after a few requests (one of them an error)."""
    app = create_app(make_settings(tmp_path_factory.mktemp("monitoring")), model=HashingModel(16))
    server = ThreadedServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for text in ("a", "b", "a"):
                client.post("/v1/embeddings", json={"input": text}).raise_for_status()
            assert client.post("/v1/embeddings", json={"input": ""}).status_code == 400
            response = client.get("/metrics")
            response.raise_for_status()
            yield response.text
    finally:
        server.stop()


def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, cwd=PROMETHEUS, timeout=60
    )


def families(metrics_text: str) -> set[str]:
    return {line.split()[2] for line in metrics_text.splitlines() if line.startswith("# TYPE ")}


def base_name(series: str) -> str:
    for suffix in _SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def test_rules_and_config_pass_promtool_checks(promtool: str) -> None:
    rules = run(promtool, "check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 7 rules found" in rules.stdout
    config = run(promtool, "check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_is_unit_tested_and_the_tests_pass(promtool: str) -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    tested = {
        case["alertname"]
        for test in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == tested
    result = run(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_live_metrics_pass_promtool_lint(promtool: str, live_metrics: str) -> None:
    result = run(promtool, "check", "metrics", stdin=live_metrics)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboard_query_only_series_the_server_exports(live_metrics: str) -> None:
    exported = {base_name(name) for name in families(live_metrics)}
    rules_text = (PROMETHEUS / "alerts.yml").read_text()
    exprs = _dashboard_exprs()
    queried = {base_name(m) for text in (rules_text, *exprs) for m in _SERIES.findall(text)}
    assert queried, "no redline series found in the rules or the dashboard"
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _rule_exprs() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _labels_by_series(metrics_text: str) -> dict[str, set[str]]:
    """Every sample name of *metrics_text* and the label names its samples carry."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def test_every_exported_histogram_is_charted_or_said_not_to_be(live_metrics: str) -> None:
    """A new histogram (as ``redline_cache_lookup_duration_seconds`` was) gets a panel, or a
    line in NOT_CHARTED; a charted one is read through its buckets (quantiles or heatmap)."""
    histograms = {
        line.split()[2]
        for line in live_metrics.splitlines()
        if line.startswith("# TYPE ")
        if line.split()[3] == "histogram"
    }
    charted = {
        name[: -len("_bucket")]
        for expr in _dashboard_exprs()
        for name in _SERIES.findall(expr)
        if name.endswith("_bucket")
    }
    assert histograms - charted == NOT_CHARTED.keys(), "chart it or say why not"
    assert "redline_cache_lookup_duration_seconds" in charted


def test_queries_group_and_filter_by_labels_the_series_carry(live_metrics: str) -> None:
    """``sum by (tier, le) (rate(..._bucket[5m]))`` of a histogram with no ``tier`` label is
    one line, not one per tier: every label a rule or a panel groups or filters by is on the
    series it queries (``le`` on buckets only), besides the scrape's ``job`` and ``instance``."""
    exported = _labels_by_series(live_metrics)
    checked = 0
    for expr in (*_rule_exprs(), *_dashboard_exprs()):
        used = {
            label.strip()
            for group in _GROUPING.findall(expr)
            for label in group.split(",")
            if label.strip()
        }
        used |= {
            label
            for matchers in _MATCHERS.findall(expr)
            for label in _MATCHER_LABEL.findall(matchers)
        }
        used -= _TARGET_LABELS
        for series in _SERIES.findall(expr):
            assert series in exported, f"{series} has no sample in a live /metrics: {expr}"
            allowed = exported[series] | ({"le"} if series.endswith("_bucket") else set())
            assert used <= allowed, f"{series} lacks {sorted(used - allowed)}: {expr}"
            checked += 1
    assert checked >= 20


def test_dashboard_panels_are_laid_out_without_overlap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


def test_per_model_series_carry_the_model_label(live_metrics: str) -> None:
    """The rules and the dashboard group the batch queue by ``model``: the server labels it."""
    per_model = (
        "redline_batch_size_count",
        "redline_batch_queue_depth",
        "redline_batch_queue_capacity",
        "redline_batch_queue_wait_seconds_count",
        "redline_inference_duration_seconds_count",
        "redline_batch_errors_total",
    )
    for name in per_model:
        lines = [line for line in live_metrics.splitlines() if line.startswith(name + "{")]
        assert lines, name
        assert all('model="hashing"' in line for line in lines), lines
