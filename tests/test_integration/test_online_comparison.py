"""Online comparison against the real broker: a candidate trained on the first part of the event
log serves a stable share of users while the rest keep v0; `xdrec evaluate --online` reports
both versions' online hit rates with confidence intervals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable

import pytest
from datasets import T0, write_clustered_dataset

from stream.core.processor import in_experiment
from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.settings import Settings, settings_env
from testkit.deployment import REPO, WorkerProcess, read_topic
from training.event_log import Window
from training.job import run_job

pytestmark = pytest.mark.integration

SPLIT = T0 + 4 * 3600  # each user has about half of their events on either side


def test_candidate_serves_a_stable_share_and_online_report_compares_versions(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("online")
    settings = make_settings(
        domains=["left", "right"],
        models={"store": str(root / "models")},
        experiment={"share": 0.5},
        trainer={
            "epochs": 3,
            "batch_size": 64,
            "holdout_share": 0.2,
            "work_dir": str(root / "work"),
            "cache_dir": str(root / "cache"),
        },
    )
    dataset = Dataset(write_clustered_dataset(root / "data"))
    stats = replay_dataset(settings, dataset, progress=False)
    result = run_job(settings, Window(end=SPLIT), progress=False, candidate=True)
    assert result.outcome == "candidate" and result.update is not None
    candidate = result.update.version

    worker_factory(settings).start()
    recs = []
    for domain in settings.domains:
        recs += read_topic(
            settings,
            settings.topics.recs(domain),
            lambda got: len(got) >= stats.events // 2 - 50,
            timeout=300,
        )
    versions_of: dict[str, set[str]] = defaultdict(set)
    for rec in recs:
        versions_of[rec["user_id"]].add(rec["model_version"])
    assert all(len(v) == 1 for v in versions_of.values())  # a user sees one version
    for user, (version,) in versions_of.items():
        assert (version == candidate) == in_experiment(user, settings)
    share = sum(v == {candidate} for v in versions_of.values()) / len(versions_of)
    assert 0.3 < share < 0.7

    env = {**os.environ, **settings_env(settings)}
    env.pop("XDREC_CONFIG", None)
    out = root / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "evaluate",
            "--online",
            "--out",
            str(out),
            "--since",
            str(SPLIT),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "online.json").read_text())
    assert set(report["versions"]) == {"v0", candidate}
    for row in report["versions"].values():
        assert row["checks"] > 100
        low, high = row["ci95"]
        assert low <= row["hit_rate"] <= high
    low, high = report["difference"]["ci95"]
    assert low <= report["difference"]["value"] <= high
    assert "| v0 |" in (out / "online.md").read_text()
