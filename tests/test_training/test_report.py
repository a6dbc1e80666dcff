"""The evaluation report renders partial results instead of failing on a missing key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.evaluation.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("metric_at_k.png", "cold_vs_warm.png", "per_domain.png")
DOMAINS = ("books", "kitchen")


def _stats(base: float, users: int) -> dict:
    """One group's metrics; values derived from ``base`` so every number is distinct."""
    stats: dict = {}
    for i, k in enumerate((5, 10, 20)):
        stats[f"hit@{k}"] = round(base + 0.1 * i, 6)
        stats[f"recall@{k}"] = round(base + 0.1 * i + 0.001, 6)
        stats[f"ndcg@{k}"] = round(base / 2 + 0.05 * i, 6)
    stats.update(
        {
            "mrr": round(base / 3, 6),
            "coverage@10": 0.5,
            "diversity@10": 0.25,
            "novelty@10": 9.87654,
            "users": users,
        }
    )
    return stats


def _group(base: float, users: int) -> dict:
    stats = _stats(base, users)
    stats["per_domain"] = {
        domain: _stats(base + 0.01 * (i + 1), users // 2) for i, domain in enumerate(DOMAINS)
    }
    return stats


@pytest.fixture
def metrics() -> dict:
    return {
        "dataset": "food-kitchen",
        "protocol": "full",
        "methods": {
            "popularity": {"cold": _group(0.1, 40), "warm": _group(0.2, 60)},
            # Evaluated on warm users only, and not on the sampled protocol.
            "zero_shot": {"warm": _group(0.3, 60)},
        },
        "sampled": {
            "protocol": "sampled",
            "negatives": 999,
            "methods": {"popularity": {"cold": _group(0.4, 40), "warm": _group(0.5, 60)}},
        },
        "meta": {
            "generated_at": "2025-01-02T03:04:05+00:00",
            "seconds": 12.345,
            "encoder": "all-MiniLM-L6-v2",
            "splits": ["test"],
            "cases": {"cold": 40, "warm": 60},
        },
        "reference": {"test/kitchen": {"popularity": {"hit@10": 0.321, "ndcg@10": 0.123}}},
    }


def test_writes_all_files(metrics: dict, tmp_path: Path) -> None:
    out = tmp_path / "report"
    paths = write_report(metrics, out)

    names = {p.name for p in paths}
    assert names == {"metrics.json", "report.md", *PLOTS}
    assert all(p.parent == out and p.is_file() for p in paths)
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5_000


def test_metrics_json_round_trips(metrics: dict, tmp_path: Path) -> None:
    write_report(metrics, tmp_path)
    text = (tmp_path / "metrics.json").read_text(encoding="utf-8")
    assert json.loads(text) == metrics
    assert text == json.dumps(metrics, indent=2, sort_keys=True) + "\n"


def test_report_markdown(metrics: dict, tmp_path: Path) -> None:
    write_report(metrics, tmp_path)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")

    assert report.startswith("# Evaluation report: food-kitchen")
    for method in ("popularity", "zero_shot"):
        assert method in report
    # Headline table rows: 4 decimals for metrics, plain integer for users.
    assert (
        "| popularity | 0.2000 | 0.1000 | 0.0333 | 0.3010 | 0.5000 | 0.2500 | 9.8765 | 40 |"
        in report
    )
    assert (
        "| zero_shot | 0.4000 | 0.2000 | 0.1000 | 0.5010 | 0.5000 | 0.2500 | 9.8765 | 60 |"
        in report
    )
    # Missing group and missing protocol both render as dashes rather than failing.
    dashes = " | ".join(["–"] * 8)
    assert report.count(f"| zero_shot | {dashes} |") == 3
    # Per-domain NDCG@10: books = base + 0.01, kitchen = base + 0.02 for warm popularity.
    assert "| method | books | kitchen |" in report
    assert "| popularity | 0.1550 | 0.1600 |" in report
    # Reference comparison uses the sampled per-domain numbers (kitchen: base + 0.02).
    assert "| test/kitchen | popularity | HR@10 | 0.3210 | 0.5200 | 0.6200 |" in report
    assert "| test/kitchen | popularity | NDCG@10 | 0.1230 | 0.2600 | 0.3100 |" in report
    for name in PLOTS:
        assert f"]({name})" in report
    for text in ("2025-01-02T03:04:05+00:00", "12.3 s", "all-MiniLM-L6-v2", "cold: 40"):
        assert text in report
    assert "999" in report


def test_copes_with_minimal_input(tmp_path: Path) -> None:
    metrics = {"dataset": "empty", "protocol": "full", "methods": {}}
    paths = write_report(metrics, tmp_path)

    assert len(paths) == 5
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Not evaluated." in report
    assert "Comparison with reference" not in report
    for name in PLOTS:
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
