"""A training job's gate and its refusals, on a real broker: what it decides from the figures,
and that a window it cannot learn from fails with a reason the metrics can count."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stream.settings import Settings, TrainerSettings
from training.event_log import Window
from training.job import JobFailed, decide, gate_metrics, run_job


def test_the_gate_promotes_only_a_model_that_beats_the_serving_one_by_the_margin() -> None:
    config = TrainerSettings(gate_margin=0.01)
    assert decide(0.30, 0.25, "v1", config, candidate=False)[0] == "promoted"
    outcome, reason = decide(0.255, 0.25, "v1", config, candidate=False)
    assert outcome == "rejected" and "margin 0.01" in reason and "v1" in reason
    assert decide(0.10, 0.25, "v1", config, candidate=True)[0] == "candidate"


def test_gate_metrics_keep_the_ranking_figures_of_each_group() -> None:
    full = {
        "cold": {"ndcg@10": 0.2, "mrr": 0.1, "users": 40, "per_domain": {"books": {}}},
        "warm": {"hit@10": 0.5},
    }
    assert gate_metrics(full) == {"cold.ndcg@10": 0.2, "cold.mrr": 0.1, "warm.hit@10": 0.5}


def test_a_window_without_events_fails_with_a_countable_reason(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        trainer={"work_dir": str(tmp_path / "work")}, models={"store": str(tmp_path / "models")}
    )
    with pytest.raises(JobFailed) as failed:
        run_job(settings, Window(), progress=False, publish=False)
    assert failed.value.reason == "no_data"
    assert not any((tmp_path / "work").glob("*/window")), "the job's scratch folder is removed"
