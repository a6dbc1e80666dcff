"""The model watcher on a real broker: the announced version becomes a scorer, a bad
announcement or artifact is refused with its reason while the serving version stays, and a
candidate's tombstone ends an online comparison."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from schemas import ZERO_SHOT_VERSION
from stream.catalog.encoder import TextEncoder
from stream.catalog.store import ItemCatalog
from stream.core.items import item_text
from stream.core.scorer import Scorer, ZeroShotScorer
from stream.kafka.topics import CANDIDATE_KEY, UPDATE_KEY
from stream.kafka.transport import OutgoingMessage
from stream.model.scorer import ModelScorer
from stream.model.watcher import ModelWatcher
from stream.settings import Settings
from stream.worker.metrics import WorkerMetrics
from testkit.artifacts import train_sample_artifact
from testkit.deployment import produce
from testkit.guarantees import add_items, sample_catalog
from training.publisher import end_experiment, model_update_for, publish_update


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, encoder: TextEncoder) -> Path:
    return train_sample_artifact(tmp_path_factory.mktemp("models"), "v1", encoder=encoder, epochs=1)


class Offers:
    def __init__(self) -> None:
        self.serving: list[Scorer] = []
        self.candidates: list[Scorer | None] = []


def _watch(
    settings: Settings, catalog: ItemCatalog, serving: str = ZERO_SHOT_VERSION
) -> tuple[Offers, WorkerMetrics]:
    """What a worker serving ``serving`` is offered when it starts on these announcements."""
    offers, metrics = Offers(), WorkerMetrics(CollectorRegistry())
    watcher = ModelWatcher(
        settings,
        catalog,
        metrics,
        offers.serving.append,
        lambda: offers.serving[-1].version if offers.serving else serving,
        offers.candidates.append,
    )
    try:
        watcher.catch_up()
    finally:
        watcher.close()
    return offers, metrics


def _catalog(path: Path, encoder: TextEncoder) -> ItemCatalog:
    """The sample catalog with the real encoder's vectors, as a worker would hold it."""
    catalog = ItemCatalog(path, encoder.fingerprint, encoder.dimension)
    items = sample_catalog()
    texts = [item_text(item.title, item.text) for item in items]
    add_items(catalog, items, texts, encoder.encode(texts))
    return catalog


def _refused(metrics: WorkerMetrics, reason: str) -> float:
    return (
        metrics.registry.get_sample_value("xdrec_model_artifacts_refused_total", {"reason": reason})
        or 0.0
    )


def test_the_announced_version_is_served_and_a_candidate_can_end(
    make_settings: Callable[..., Settings], artifact: Path, encoder: TextEncoder, tmp_path: Path
) -> None:
    settings = make_settings(models={"store": str(artifact.parent)})
    update = model_update_for(artifact)
    publish_update(settings, update)
    publish_update(settings, update, key=CANDIDATE_KEY)
    end_experiment(settings)
    offers, metrics = _watch(settings, _catalog(tmp_path / "items", encoder))
    assert [s.version for s in offers.serving] == ["v1"]
    assert isinstance(offers.serving[0], ModelScorer)
    assert offers.candidates == [None], "the latest candidate record is the tombstone"
    assert _refused(metrics, "manifest_invalid") == 0


def test_bad_announcements_and_artifacts_are_refused_with_their_reason(
    make_settings: Callable[..., Settings], artifact: Path, encoder: TextEncoder, tmp_path: Path
) -> None:
    store = tmp_path / "models"
    shutil.copytree(artifact, store / "v1")
    settings = make_settings(models={"store": str(store)})
    catalog = _catalog(tmp_path / "items", encoder)

    topic = settings.topics.model_updates()
    produce(settings, [OutgoingMessage(topic, UPDATE_KEY, b"{not an update")])
    offers, metrics = _watch(settings, catalog)
    assert offers.serving == [] and _refused(metrics, "manifest_invalid") == 1

    wrong = model_update_for(store / "v1").model_copy(update={"sha256": "0" * 64})
    publish_update(settings, wrong)
    offers, metrics = _watch(settings, catalog)
    assert offers.serving == [] and _refused(metrics, "sha256_mismatch") == 1

    rollback = wrong.model_copy(update={"version": ZERO_SHOT_VERSION, "artifact_uri": None})
    publish_update(settings, rollback)
    assert _watch(settings, catalog)[0].serving == [], "v0 already serves: nothing to swap"
    offers, _ = _watch(settings, catalog, serving="v1")
    assert len(offers.serving) == 1 and isinstance(offers.serving[0], ZeroShotScorer)
    catalog.close()
