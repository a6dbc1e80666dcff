"""Announces a stored artifact on the compacted ``models.updates`` topic as a ModelUpdate."""

from __future__ import annotations

import json
import time
from pathlib import Path

from schemas import SCHEMA_VERSION, ModelUpdate
from stream.settings import Settings
from stream.transport import OutgoingMessage, make_producer, produce_all
from training.artifacts import MANIFEST, WEIGHTS

UPDATE_KEY = b"serving"


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


def publish_update(settings: Settings, update: ModelUpdate) -> None:
    """One key, compacted: the topic's latest message is the version every worker serves."""
    message = OutgoingMessage(
        settings.topics.model_updates(), UPDATE_KEY, update.model_dump_json().encode("utf-8")
    )
    produce_all(make_producer(settings), [message])
