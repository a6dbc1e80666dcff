"""Prometheus and Grafana assets: valid, tested alerts, and only metrics the code exports."""

from __future__ import annotations

import json
import re
import subprocess

import yaml

from stream.worker.metrics import WorkerMetrics
from testkit.deployment import REPO, require_binary
from training.trainer_metrics import TrainerMetrics

PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboard.json"
METRIC_NAME = re.compile(r"\b(xdrec_[a-z0-9_]+|xdrec:[a-z0-9_:]+)")
SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def _promtool(*args: str) -> str:
    result = subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, cwd=PROMETHEUS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_prometheus_config_and_rules_are_valid() -> None:
    _promtool("check", "config", "prometheus.yml")
    _promtool("check", "rules", "recording_rules.yml", "alert_rules.yml")


def test_alerts_fire_when_they_should() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "tests/alert_rules_test.yml")


def exported_metric_names() -> set[str]:
    suffix = {"counter": "_total", "info": "_info"}
    return {
        metric.name + suffix.get(metric.type, "")
        for registry in (WorkerMetrics().registry, TrainerMetrics().registry)
        for metric in registry.collect()
    }


def recorded_names() -> set[str]:
    rules = yaml.safe_load((PROMETHEUS / "recording_rules.yml").read_text())
    return {rule["record"] for group in rules["groups"] for rule in group["rules"]}


def _referenced(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC_NAME.findall(expr)}


def _unknown(names: set[str]) -> set[str]:
    exported = exported_metric_names() | recorded_names()
    # Histogram series that only exist after the first observation.
    exported |= {name + suffix for name in exported for suffix in SUFFIXES}
    return {name for name in names if name not in exported}


def test_every_dashboard_query_uses_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert expressions
    assert _unknown(_referenced(expressions)) == set()


def test_every_rule_uses_exported_metrics() -> None:
    expressions = []
    for name in ("recording_rules.yml", "alert_rules.yml"):
        for group in yaml.safe_load((PROMETHEUS / name).read_text())["groups"]:
            expressions.extend(rule["expr"] for rule in group["rules"])
    assert _unknown(_referenced(expressions)) == set()


def test_every_metric_is_documented() -> None:
    table = (REPO / "docs" / "metrics.md").read_text()
    for registry in (WorkerMetrics().registry, TrainerMetrics().registry):
        for metric in registry.collect():
            assert f"`{metric.name}" in table, metric.name
