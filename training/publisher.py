"""Announces a stored artifact on the compacted ``models.updates`` topic as a ModelUpdate."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import ValidationError

from schemas import SCHEMA_VERSION, ZERO_SHOT_VERSION, ModelUpdate
from stream.kafka.snapshot import read_to_end
from stream.kafka.topics import CANDIDATE_KEY, UPDATE_KEY
from stream.kafka.transport import OutgoingMessage, make_consumer, make_producer, produce_all
from stream.model.artifacts import MANIFEST, WEIGHTS, load_version
from stream.model.store import ModelStore
from stream.settings import Settings


def model_update_for(artifact: Path) -> ModelUpdate:
    manifest = json.loads((artifact / MANIFEST).read_text())
    return ModelUpdate(
        schema_version=SCHEMA_VERSION,
        version=manifest["version"],
        parent_version=manifest.get("parent_version"),
        artifact_uri=artifact.resolve().as_uri(),
        sha256=manifest["sha256"][WEIGHTS],
        metrics={k: float(v) for k, v in manifest.get("metrics", {}).items()},
        created_at=time.time(),
    )


def publish_update(settings: Settings, update: ModelUpdate, key: bytes = UPDATE_KEY) -> None:
    """Compacted by key: the latest ``serving`` message is the version every worker serves,
    the latest ``candidate`` one the version compared with it on a share of users."""
    message = OutgoingMessage(
        settings.topics.model_updates(), key, update.model_dump_json().encode("utf-8")
    )
    produce_all(make_producer(settings), [message])


def end_experiment(settings: Settings) -> None:
    """A tombstone for the candidate: every user goes back to the serving version."""
    produce_all(
        make_producer(settings),
        [OutgoingMessage(settings.topics.model_updates(), CANDIDATE_KEY, None)],
    )


def serving_update(settings: Settings, timeout: float = 10.0) -> ModelUpdate | None:
    """The latest valid ModelUpdate on ``models.updates``: the version workers serve (None:
    nothing was ever published, so they serve version 0)."""
    consumer = make_consumer(settings)
    try:
        latest: ModelUpdate | None = None
        for message in read_to_end(consumer, [settings.topics.model_updates()], timeout):
            if message.key() not in (UPDATE_KEY, None):
                continue
            try:
                latest = ModelUpdate.model_validate_json(message.value() or b"")
            except ValidationError:
                continue  # workers refuse it too; the one before stays in service
        return latest
    finally:
        consumer.close()


def rollback_update(settings: Settings, store: ModelStore, to: str | None = None) -> ModelUpdate:
    """The ModelUpdate that puts ``to`` (default: the serving version's parent) back into
    service; the stored artifact is validated first, so a rollback never installs a bad one."""
    serving = serving_update(settings)
    target = to or (serving.parent_version if serving else None)
    if target is None:
        raise ValueError(
            "nothing to roll back to: workers serve v0 or a version without a parent; "
            "name one with --to (see `xdrec model list`)"
        )
    if target == ZERO_SHOT_VERSION:
        return ModelUpdate(
            schema_version=SCHEMA_VERSION,
            version=ZERO_SHOT_VERSION,
            parent_version=None,
            artifact_uri=None,
            sha256=None,
            metrics={},
            created_at=time.time(),
        )
    folder = store.path_of(target)
    if not folder.is_dir():
        raise ValueError(
            f"version {target!r} is not in the model store {store.uri}: `xdrec model list` "
            "shows the stored versions"
        )
    load_version(folder)
    return model_update_for(folder)
