"""Deployments of their own on a real broker, for the tests and the benchmarks: settings with
their own app id, topics and state, producing to them and reading them back."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from schemas import SCHEMA_VERSION, UserEvent
from stream.devtools.supervisor import WorkerProcess
from stream.kafka.topics import create_topics
from stream.kafka.transport import (
    OutgoingMessage,
    make_consumer,
    make_producer,
    produce_all,
    produce_tracked,
)
from stream.settings import Settings, merge_sections

REPO = Path(__file__).resolve().parent.parent

__all__ = [
    "REPO",
    "WorkerProcess",
    "isolated_settings",
    "produce",
    "produce_tracked",
    "read_topic",
    "require_binary",
    "user_event",
]


def require_binary(name: str) -> str:
    """The path of ``name``; in CI a missing binary fails the test instead of skipping it."""
    import shutil

    import pytest

    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found: run deploy/install-system-deps.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def isolated_settings(
    bootstrap_servers: str,
    state_dir: Path,
    *,
    app_id: str | None = None,
    **overrides: object,
) -> Settings:
    """Settings of a deployment of its own on that broker (app id and so consumer group, topic
    prefix, state folder, /metrics on a free port), with its topics created; ``overrides``
    update whole sections key by key."""
    app_id = app_id or f"t{uuid.uuid4().hex[:8]}"
    values: dict = {
        "app_id": app_id,
        "kafka": {"bootstrap_servers": bootstrap_servers},
        "topics": {"prefix": f"{app_id}."},
        "metrics": {"port": 0},
        "worker": {"state_dir": str(state_dir)},
    }
    settings = Settings(**merge_sections(values, overrides))
    create_topics(settings)
    return settings


def produce(settings: Settings, messages: list[OutgoingMessage]) -> None:
    produce_all(make_producer(settings), messages)


def read_topic(
    settings: Settings,
    topic: str,
    until: Callable[[list[dict]], bool],
    timeout: float = 90.0,
    decode: bool = True,
) -> list:
    """Read ``topic`` from the beginning until ``until(messages)`` holds; fail on timeout."""
    consumer = make_consumer(settings)
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
    messages: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error():
                    continue
                messages.append(json.loads(message.value()) if decode else message)
            if until(messages):
                return messages
    finally:
        consumer.close()
    raise AssertionError(f"timed out reading {topic}: got {len(messages)} messages")


def user_event(
    settings: Settings,
    user_id: str,
    item_id: str,
    timestamp: float,
    *,
    domain: str | None = None,
    event_type: str = "purchase",
    rating: float | None = None,
    **inline: str,
) -> tuple[str, OutgoingMessage]:
    """A valid event for ``item_id`` (domain from the sample id prefix); returns its id too."""
    domain = domain or item_id.split("-")[0]
    event = UserEvent(
        schema_version=SCHEMA_VERSION,
        event_id=uuid.uuid4().hex,
        user_id=user_id,
        domain=domain,
        item_id=item_id,
        event_type=event_type,
        timestamp=timestamp,
        rating=rating,
        **inline,
    )
    message = OutgoingMessage(
        settings.topics.events(domain), user_id.encode(), event.model_dump_json().encode()
    )
    return event.event_id, message
