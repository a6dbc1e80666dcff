"""Announcing versions on a real broker: the version workers serve is the last valid serving
update, whatever else the topic holds; a rollback installs only what the store can load."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas import SCHEMA_VERSION, ZERO_SHOT_VERSION, ModelUpdate
from stream.kafka.topics import CANDIDATE_KEY, UPDATE_KEY
from stream.kafka.transport import OutgoingMessage
from stream.model.store import ModelStore
from stream.settings import Settings
from testkit.artifacts import train_sample_artifact
from testkit.deployment import produce
from training.publisher import (
    end_experiment,
    model_update_for,
    publish_update,
    rollback_update,
    serving_update,
)


def _update(version: str, parent: str | None = None) -> ModelUpdate:
    return ModelUpdate(
        schema_version=SCHEMA_VERSION,
        version=version,
        parent_version=parent,
        artifact_uri=f"file:///models/{version}",
        sha256="0" * 64,
        metrics={},
        created_at=time.time(),
    )


def test_the_serving_version_is_the_last_valid_serving_update(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    assert serving_update(settings) is None  # nothing announced: workers serve version 0
    publish_update(settings, _update("v1"))
    publish_update(settings, _update("v2", parent="v1"))
    publish_update(settings, _update("v9"), key=CANDIDATE_KEY)  # a candidate serves no one
    topic = settings.topics.model_updates()
    produce(settings, [OutgoingMessage(topic, UPDATE_KEY, b"{not an update")])
    end_experiment(settings)
    serving = serving_update(settings)
    assert serving is not None and serving.version == "v2" and serving.parent_version == "v1"


def test_a_rollback_goes_to_the_parent_and_refuses_what_the_store_lacks(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(models={"store": str(tmp_path / "models")})
    store = ModelStore(settings.models.store)
    with pytest.raises(ValueError, match="nothing to roll back to"):
        rollback_update(settings, store)
    folder = train_sample_artifact(tmp_path / "models", "v1", epochs=1)
    publish_update(settings, model_update_for(folder))
    publish_update(settings, _update("v2", parent="v1"))
    back = rollback_update(settings, store)
    assert back.version == "v1" and back.sha256 == model_update_for(folder).sha256
    assert rollback_update(settings, store, to=ZERO_SHOT_VERSION).artifact_uri is None
    with pytest.raises(ValueError, match="not in the model store"):
        rollback_update(settings, store, to="v7")
