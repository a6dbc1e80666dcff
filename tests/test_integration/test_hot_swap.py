"""Hot swap: a new model version takes over between batches with no event lost or doubled;
corrupt artifacts are refused and the serving version stays."""

from __future__ import annotations

import json
import pickle
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from stream.data.dataset import Dataset
from stream.data.replay import replay_dataset
from stream.data.sample import sample_items, write_sample_dataset
from stream.model.artifacts import MANIFEST, WEIGHTS, sha256_of
from stream.settings import Settings
from testkit.artifacts import train_sample_artifact
from testkit.deployment import WorkerProcess, produce, read_topic, user_event
from training.publisher import model_update_for, publish_update

pytestmark = pytest.mark.integration

T0 = 1_704_067_200.0


def corrupt_copy(good: Path, store: Path, version: str, how: str) -> Path:
    """A copy of ``good`` under ``version`` whose weights are bad but whose sha256 matches."""
    bad = store / version
    bad.mkdir()
    for name in good.iterdir():
        bad.joinpath(name.name).write_bytes(name.read_bytes())
    if how == "nan":
        weights = load_file(str(bad / WEIGHTS))
        weights["item_id.weight"][0, 0] = float("nan")
        save_file(weights, str(bad / WEIGHTS))
    else:  # a pickle posing as safetensors
        (bad / WEIGHTS).write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    manifest = json.loads((bad / MANIFEST).read_text())
    manifest["version"] = version
    manifest["sha256"][WEIGHTS] = sha256_of(bad / WEIGHTS)
    (bad / MANIFEST).write_text(json.dumps(manifest))
    return bad


def metric_value(port: int, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name}{{{labels}}}"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_new_model_swaps_in_without_losing_events_and_bad_ones_are_refused(
    make_settings: Callable[..., Settings],
    worker_factory: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    store = tmp_path / "models"
    store.mkdir()
    settings = make_settings(models={"store": str(store)})
    replay_dataset(
        settings,
        Dataset(write_sample_dataset(tmp_path / "sample")),
        include_events=False,
        progress=False,
    )
    worker = worker_factory(settings).start()
    books = [i["item_id"] for i in sample_items() if i["domain"] in ("books", "music")]
    sent: list[str] = []

    def wave(count: int) -> None:
        start = len(sent)
        events = [
            user_event(settings, f"s{i % 9}", books[i % len(books)], T0 + i)
            for i in range(start, start + count)
        ]
        produce(settings, [message for _, message in events])
        sent.extend(event_id for event_id, _ in events)

    def recs_until(predicate: Callable[[list[dict]], bool]) -> list[dict]:
        return read_topic(settings, settings.topics.recs("movies"), predicate, timeout=120)

    wave(100)
    recs_until(lambda got: set(sent) <= {r["trigger"]["event_id"] for r in got})

    good = train_sample_artifact(store, "v1")
    publish_update(settings, model_update_for(good))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # events keep streaming while the swap happens
        wave(20)
        got = recs_until(lambda got: set(sent) <= {r["trigger"]["event_id"] for r in got})
        if any(r["model_version"] == "v1" for r in got):
            break
        time.sleep(0.5)
    wave(100)
    recs = recs_until(lambda got: set(sent) <= {r["trigger"]["event_id"] for r in got})

    ids_per_event: dict[str, set[str]] = defaultdict(set)
    for rec in recs:
        ids_per_event[rec["trigger"]["event_id"]].add(rec["recommendation_id"])
    assert set(ids_per_event) == set(sent)  # no event lost
    assert all(len(ids) == 1 for ids in ids_per_event.values())  # none applied twice
    by_partition: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for rec in recs:
        by_partition[(rec["trigger"]["topic"], rec["trigger"]["partition"])].append(rec)
    for partition_recs in by_partition.values():
        versions = [
            r["model_version"] for r in sorted(partition_recs, key=lambda r: r["trigger"]["offset"])
        ]
        assert versions == sorted(versions), "after the swap no v0 recommendation may follow"
        assert versions[-1] == "v1"

    port = worker.metrics_port()
    for version, how, reason in (("v2", "nan", "non_finite"), ("v3", "pickle", "not_safetensors")):
        publish_update(settings, model_update_for(corrupt_copy(good, store, version, how)))
        deadline = time.monotonic() + 60
        while metric_value(port, "xdrec_model_artifacts_refused_total", f'reason="{reason}"') < 1:
            assert time.monotonic() < deadline, f"{reason} artifact was not refused"
            time.sleep(0.5)
    wave(50)
    recs = recs_until(lambda got: set(sent) <= {r["trigger"]["event_id"] for r in got})
    latest = {r["trigger"]["event_id"]: r["model_version"] for r in recs}
    assert {latest[event_id] for event_id in sent[-50:]} == {"v1"}
    assert np.isfinite([item["score"] for r in recs for item in r["items"]]).all()
