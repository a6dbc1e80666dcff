"""The retraining loop against the real broker: a worker asks for training, the trainer service
reads the event log, its gate promotes a candidate that beats the serving model, the worker
swaps it in; a weak candidate is rejected, a job without data fails and is counted, and an
operator rolls back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from datasets import T0, write_clustered_dataset

from schemas import SCHEMA_VERSION, ModelUpdate, TrainingRequest
from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.devtools.supervisor import TRAINER_READY_LINE
from stream.kafka.transport import OutgoingMessage
from stream.model.artifacts import MANIFEST
from stream.settings import Settings, settings_env
from testkit.deployment import REPO, WorkerProcess, produce, read_topic, user_event

pytestmark = pytest.mark.integration

EVENTS = 240 * 8


@dataclass
class Deployment:
    settings: Settings
    worker: WorkerProcess
    trainer: WorkerProcess
    store: Path


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def model_updates(settings: Settings, count: int) -> list[ModelUpdate]:
    messages = read_topic(
        settings, settings.topics.model_updates(), lambda m: len(m) >= count, timeout=60
    )
    return [ModelUpdate.model_validate(m) for m in messages]


def wait_until_served(worker: WorkerProcess, version: str) -> None:
    """Block until the worker reports ``version`` in service: its watcher swaps asynchronously,
    so an event produced before that may still be scored by the previous version."""
    port = worker.metrics_port()
    wait_for(
        lambda: f'xdrec_model_info{{model_version="{version}"}} 1.0' in scrape(port),
        timeout=120,
        what=f"the worker to serve {version}",
    )


def xdrec(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI as an operator would, configured through the environment."""
    variables = {**os.environ, **settings_env(settings), **env}
    variables.pop("XDREC_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        env=variables,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def deployment(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("trainer")
    store = root / "models"
    settings = make_settings(
        domains=["left", "right"],
        models={"store": str(store)},
        triggers={"every_events": 500},
        trainer={
            "epochs": 3,
            "batch_size": 64,
            "holdout_share": 0.2,
            "coalesce_seconds": 1.0,
            "metrics_port": 0,
            "work_dir": str(root / "work"),
            "cache_dir": str(root / "cache"),
        },
    )
    worker = worker_factory(settings).start()
    replay_dataset(settings, Dataset(write_clustered_dataset(root / "data")), progress=False)
    trainer = WorkerProcess(
        settings,
        root / "trainer.log",
        cwd=REPO,
        command=("trainer",),
        ready_line=TRAINER_READY_LINE,
    )
    trainer.start(wait_for_assignment=False)
    yield Deployment(settings, worker, trainer, store)
    trainer.stop()


def test_worker_requests_training_and_the_promoted_model_is_served(deployment: Deployment) -> None:
    settings = deployment.settings
    requests = read_topic(
        settings, settings.topics.training_requests(), lambda m: len(m) >= EVENTS // 500
    )
    assert {TrainingRequest.model_validate(m).reason for m in requests} == {"event_count"}

    port = deployment.trainer.metrics_port()
    wait_for(
        lambda: sample_value(scrape(port), "xdrec_training_jobs_total", outcome="promoted") >= 1,
        timeout=600,
        what="a promoted training job",
    )
    metrics = scrape(port)
    assert sample_value(metrics, "xdrec_training_jobs_started_total") == 1
    assert sample_value(metrics, "xdrec_trainer_requests_total", reason="event_count") == 3
    assert sample_value(metrics, "xdrec_trainer_requests_coalesced_total") == 2
    assert sample_value(metrics, "xdrec_training_seconds_count") == 1
    candidate = sample_value(metrics, "xdrec_promoted_model_metric", metric="cold.ndcg@10")
    serving = sample_value(
        metrics, "xdrec_training_candidate_metric", model="serving", metric="cold.ndcg@10"
    )
    assert candidate > serving > 0

    # While v0 served, the job first published v0's popularity prior, then the trained model.
    prior, update = model_updates(settings, 2)
    prior_manifest = json.loads((deployment.store / prior.version / MANIFEST).read_text())
    assert prior_manifest["kind"] == "popularity_prior"
    assert prior_manifest["data_window"]["events"] == EVENTS
    assert prior_manifest["prior"]["cold_weight"] > 0 and prior_manifest["prior"]["warm_weight"] > 0
    assert update.parent_version == prior.version
    manifest = json.loads((deployment.store / update.version / MANIFEST).read_text())
    assert manifest["kind"] == "transfer_model"
    assert manifest["data_window"]["events"] == EVENTS
    assert manifest["data_window"]["held_out_users"] > 0
    assert len(manifest["data_window"]["requests"]) == 3
    assert manifest["metrics"]["candidate.cold.ndcg@10"] == pytest.approx(candidate)

    # The worker swaps the new version in: recommendations for new events carry it.
    wait_until_served(deployment.worker, update.version)
    _, message = user_event(settings, "fresh-user", "left-3-1", T0 + 10**6, domain="left")
    produce(settings, [message])
    recs = read_topic(
        settings,
        settings.topics.recs("right"),
        lambda m: any(r["user_id"] == "fresh-user" for r in m),
        timeout=120,
    )
    (fresh,) = [r for r in recs if r["user_id"] == "fresh-user"]
    assert fresh["model_version"] == update.version


def test_gate_rejects_a_candidate_that_does_not_win_by_the_margin(deployment: Deployment) -> None:
    settings = deployment.settings
    before = len(model_updates(settings, 1))
    done = xdrec(settings, "trainer", "--once", XDREC_TRAINER__GATE_MARGIN="1.0")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rejected: cold.ndcg@10" in done.stdout
    assert "does not beat the serving" in done.stdout
    time.sleep(2.0)
    assert len(model_updates(settings, before)) == before


def test_a_job_without_data_fails_and_is_counted(deployment: Deployment) -> None:
    settings = deployment.settings
    request = TrainingRequest(
        schema_version=SCHEMA_VERSION,
        request_id="future-window",
        reason="manual",
        requested_by="test",
        requested_at=time.time(),
        window_start=time.time() + 10 * 86_400,
    )
    produce(
        settings,
        [
            OutgoingMessage(settings.topics.training_requests(), b"bad", b"{not json"),
            OutgoingMessage(
                settings.topics.training_requests(),
                b"future-window",
                request.model_dump_json().encode(),
            ),
        ],
    )
    port = deployment.trainer.metrics_port()
    wait_for(
        lambda: sample_value(scrape(port), "xdrec_training_failures_total", reason="no_data") >= 1,
        timeout=120,
        what="a failed job",
    )
    metrics = scrape(port)
    assert sample_value(metrics, "xdrec_training_jobs_total", outcome="failed") == 1
    assert sample_value(metrics, "xdrec_trainer_requests_invalid_total") == 1
    assert deployment.trainer.alive()


def test_rollback_returns_the_workers_to_the_parent_version(deployment: Deployment) -> None:
    """The promoted model's parent is v0's popularity prior: rolled back, workers serve it."""
    settings = deployment.settings
    prior, promoted = model_updates(settings, 2)[:2]
    done = xdrec(settings, "model", "rollback")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"version={prior.version}" in done.stdout
    updates = model_updates(settings, 3)
    assert updates[-1].version == prior.version and updates[-1].sha256 == prior.sha256

    listed = xdrec(settings, "model", "list")
    assert f"{promoted.version} kind=transfer_model" in listed.stdout
    assert f"{prior.version} kind=popularity_prior" in listed.stdout

    wait_until_served(deployment.worker, prior.version)

    _, message = user_event(settings, "later-user", "left-2-2", T0 + 2 * 10**6, domain="left")
    produce(settings, [message])
    recs = read_topic(
        settings,
        settings.topics.recs("right"),
        lambda m: any(r["user_id"] == "later-user" for r in m),
        timeout=120,
    )
    (later,) = [r for r in recs if r["user_id"] == "later-user"]
    assert later["model_version"] == prior.version
    # The prior's parent is version 0 itself.
    again = xdrec(settings, "model", "rollback")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "version=v0" in again.stdout
    assert model_updates(settings, 4)[-1].artifact_uri is None
    wait_until_served(deployment.worker, "v0")
